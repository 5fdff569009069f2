"""Make a DFDC-style folder: originals cut from real videos, fakes made by altering their faces.

Every original is the first FRAMES frames of a source video, resized to WIDTHxHEIGHT and written as
Motion-JPEG AVI (each frame coded alone, so a fake differs from its original only in the 8x8 blocks
its altered region touches). Each fake is a copy of its original whose pixels inside every face box
the detector finds are inverted (255 - value), written the same way: the same size and frame count.
``metadata.json`` names them as DFDC does (``{"fake.avi": {"label": "FAKE", "original": "real.avi"}}``).

Extra fakes for the cases that cannot reuse (``--unmatched``): one whose original is not in the
manifest and one of three quarters the size.

    .venv/bin/python benchmarks/dfdc_folder.py ../shared/data/videos/short_hamilton_clip.mp4 --output /tmp/dfdc \\
        --fakes 2 --frames 48
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

FOURCC = "MJPG"


def read_frames(path: str, frames: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The first ``frames`` frames of ``path`` as RGB, resized to ``size`` (width, height)."""
    capture = cv2.VideoCapture(str(path))
    images = []
    while len(images) < frames:
        ok, bgr = capture.read()
        if not ok:
            break
        images.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    capture.release()
    if len(images) < frames:
        raise ValueError(f"{path}: {len(images)} frames, {frames} wanted")
    return images


def write_video(path: Path, images: list[np.ndarray], fps: float = 25.0) -> None:
    """RGB frames -> a Motion-JPEG AVI at ``path``."""
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
    for image in images:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()


def altered(images: list[np.ndarray], boxes: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Copies of ``images`` with the pixels inside each frame's boxes (N, 4) inverted; ``seed`` shifts
    the region by up to a pixel so that each fake of one original differs."""
    out = []
    for image, frame_boxes in zip(images, boxes):
        image = image.copy()
        for x1, y1, x2, y2 in np.asarray(frame_boxes).reshape(-1, 4):
            left, top = max(0, int(x1) + seed % 2), max(0, int(y1))
            image[top:max(top, int(y2)), left:max(left, int(x2))] ^= 0xFF
        out.append(image)
    return out


def make_folder(sources: list[str], output: Path, fakes: int, frames: int, size: tuple[int, int],
                unmatched: bool = False, min_face_size: float = 30.0) -> dict:
    """Write the folder (see the module docstring); returns its metadata. Boxes are found by a
    FaceDetector with ``min_face_size`` on every frame of each original."""
    from raydetect.core.detector import FaceDetector

    detector = FaceDetector(min_face_size=min_face_size, device="cpu")
    output.mkdir(parents=True, exist_ok=True)
    metadata: dict = {}
    for number, source in enumerate(sources):
        images = read_frames(source, frames, size)
        real = f"real_{number:02d}.avi"
        write_video(output / real, images)
        metadata[real] = {"label": "REAL", "split": "train"}
        boxes = [d.boxes for d in detector.detect(images)]
        for fake in range(fakes):
            name = f"fake_{number:02d}_{fake:02d}.avi"
            write_video(output / name, altered(images, boxes, fake))
            metadata[name] = {"label": "FAKE", "split": "train", "original": real}
        if unmatched and number == 0:
            write_video(output / "fake_orphan.avi", altered(images, boxes, 0))
            metadata["fake_orphan.avi"] = {"label": "FAKE", "split": "train", "original": "not_listed.avi"}
            resized = (size[0] * 3 // 4, size[1] * 3 // 4)
            small = [cv2.resize(image, resized, interpolation=cv2.INTER_AREA) for image in altered(images, boxes, 0)]
            write_video(output / "fake_small.avi", small)
            metadata["fake_small.avi"] = {"label": "FAKE", "split": "train", "original": real}
    (output / "metadata.json").write_text(json.dumps(metadata, indent=1))
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="videos to cut the originals from (one original each)")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--fakes", type=int, default=2, help="fakes per original")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the originals")
    parser.add_argument("--unmatched", action="store_true", help="add a fake without original and one of another size")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    metadata = make_folder(args.sources, args.output, args.fakes, args.frames, (width, height), args.unmatched)
    print(f"{len(metadata)} videos in {args.output}")


if __name__ == "__main__":
    main()
