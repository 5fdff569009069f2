"""Benchmark inputs: list images and video frames, decode them to RGB uint8 the same way everywhere.

Imports only numpy and OpenCV so that both the project's environment and the separate peer
environment (facenet-pytorch) can load it by path; one code path for listing, decoding and
resizing means both detectors see byte-identical pixels.

An input spec is one of
  - an image file:                ``photos/obama.jpg``
  - a directory (recursive):      ``crowds``
  - a video with frame selection: ``videos/vtest.avi@every=50``, ``videos/x.mp4@frames=0,10,20``,
    ``videos/x.mp4@every=10,start=5,stop=60,max=4``, any of them with ``,resize=1280x720``.
Relative paths are resolved against the data root (``../shared/data`` from the repository root)
when they do not exist as given. Each decoded input gets a stable key: its path relative to the
data root (or absolute when outside it), ``#frame=N`` for video frames, ``@WxH`` when resized.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of a video to take: ``frames`` (explicit indices) or a stride over a range."""

    every: int = 1
    start: int = 0
    stop: int | None = None  # exclusive; None = end of the video
    max_count: int | None = None
    frames: tuple[int, ...] | None = None

    def indices(self, frame_count: int) -> list[int]:
        if self.frames is not None:
            picked = [i for i in self.frames if 0 <= i < frame_count]
        else:
            stop = frame_count if self.stop is None else min(self.stop, frame_count)
            picked = list(range(self.start, stop, self.every))
        return picked if self.max_count is None else picked[: self.max_count]


@dataclass(frozen=True)
class MediaItem:
    """One decodable input: an image file, or one frame of a video (``frame`` is its index)."""

    key: str
    path: Path
    frame: int | None = None
    resize: tuple[int, int] | None = None  # (width, height) after decoding, cv2.INTER_AREA


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"size must look like WIDTHxHEIGHT, got {text!r}") from exc
    if w < 1 or h < 1:
        raise ValueError(f"size must be positive, got {text!r}")
    return w, h


def _parse_selection(options: str) -> tuple[FrameSelection, tuple[int, int] | None]:
    fields: dict = {}
    resize = None
    for part in filter(None, options.split(",")):
        name, _, value = part.partition("=")
        if name == "frames":
            fields["frames"] = tuple(int(v) for v in value.split(":") if v)
        elif name in ("every", "start", "stop"):
            fields[name] = int(value)
        elif name == "max":
            fields["max_count"] = int(value)
        elif name == "resize":
            resize = parse_size(value)
        else:
            raise ValueError(f"unknown video option {name!r} in {options!r} "
                             "(use every=, start=, stop=, max=, frames=a:b:c, resize=WxH)")
    if fields.get("every", 1) < 1:
        raise ValueError(f"every= must be >= 1 in {options!r}")
    return FrameSelection(**fields), resize


def _resolve(path_text: str, data_root: Path) -> Path:
    path = Path(path_text)
    if not path.exists() and not path.is_absolute() and (data_root / path).exists():
        path = data_root / path
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path_text} (also looked under {data_root})")
    return path.resolve()


def _key(path: Path, data_root: Path) -> str:
    try:
        return path.relative_to(data_root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _with_size(key: str, resize: tuple[int, int] | None) -> str:
    return key if resize is None else f"{key}@{resize[0]}x{resize[1]}"


def video_frame_count(path: Path) -> int:
    """Number of decodable frames (counted by decoding: container metadata can be wrong)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}")
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def list_inputs(specs: Sequence[str], data_root: Path = DEFAULT_DATA_ROOT,
                resize: tuple[int, int] | None = None) -> list[MediaItem]:
    """Expand specs into items in a deterministic order (directories sorted, recursive).

    ``resize`` applies to every item that has no ``resize=`` of its own.
    """
    items: list[MediaItem] = []
    for spec in specs:
        path_text, _, options = spec.partition("@")
        path = _resolve(path_text, data_root)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.suffix.lower() in IMAGE_EXTENSIONS and child.is_file():
                    items.append(MediaItem(_with_size(_key(child, data_root), resize), child, None, resize))
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            selection, own_size = _parse_selection(options)
            size = own_size or resize
            for index in selection.indices(video_frame_count(path)):
                key = _with_size(f"{_key(path, data_root)}#frame={index}", size)
                items.append(MediaItem(key, path, index, size))
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            if options:
                raise ValueError(f"options after @ apply to videos only: {spec!r}")
            items.append(MediaItem(_with_size(_key(path, data_root), resize), path, None, resize))
        else:
            raise ValueError(f"not an image, video or directory: {spec!r}")
    return items


def _to_rgb(bgr: np.ndarray, resize: tuple[int, int] | None) -> np.ndarray:
    if resize is not None and (bgr.shape[1], bgr.shape[0]) != resize:
        bgr = cv2.resize(bgr, resize, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def decode_image(path: Path, resize: tuple[int, int] | None = None) -> np.ndarray:
    """Image file -> (H, W, 3) uint8 RGB (alpha dropped, grayscale expanded, EXIF orientation applied)."""
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path}")
    return _to_rgb(bgr, resize)


def iter_decoded(items: Sequence[MediaItem]) -> Iterator[tuple[MediaItem, np.ndarray]]:
    """Yield (item, RGB uint8 array) in order; each video is opened once and read forward."""
    position = 0
    while position < len(items):
        item = items[position]
        if item.frame is None:
            yield item, decode_image(item.path, item.resize)
            position += 1
            continue
        # Consecutive frames of the same video: one sequential pass (grab skips without decoding).
        run_end = position
        while (run_end < len(items) and items[run_end].path == item.path
               and items[run_end].frame is not None and items[run_end].resize == item.resize):
            run_end += 1
        wanted = {it.frame: it for it in items[position:run_end]}
        capture = cv2.VideoCapture(str(item.path))
        if not capture.isOpened():
            raise ValueError(f"cannot open video {item.path}")
        index, last = 0, max(wanted)
        try:
            while index <= last:
                if index in wanted:
                    ok, bgr = capture.read()
                    if not ok:
                        raise ValueError(f"{item.path}: frame {index} could not be decoded")
                    yield wanted[index], _to_rgb(bgr, wanted[index].resize)
                elif not capture.grab():
                    raise ValueError(f"{item.path}: video ended before frame {index}")
                index += 1
        finally:
            capture.release()
        position = run_end


_SIZE_SUFFIX = re.compile(r"@(\d+)x(\d+)$")
_FRAME_SUFFIX = re.compile(r"#frame=(\d+)$")


def item_from_key(key: str, data_root: Path = DEFAULT_DATA_ROOT) -> MediaItem:
    """Rebuild the item a key names (inverse of the keys ``list_inputs`` makes)."""
    rest, resize = key, None
    size_match = _SIZE_SUFFIX.search(rest)
    if size_match:
        resize = (int(size_match.group(1)), int(size_match.group(2)))
        rest = rest[: size_match.start()]
    frame = None
    frame_match = _FRAME_SUFFIX.search(rest)
    if frame_match:
        frame = int(frame_match.group(1))
        rest = rest[: frame_match.start()]
    path = Path(rest) if Path(rest).is_absolute() else data_root / rest
    if not path.exists():
        raise FileNotFoundError(f"input of key {key!r} not found at {path}")
    return MediaItem(key, path.resolve(), frame, resize)


def load_all(specs: Sequence[str], data_root: Path = DEFAULT_DATA_ROOT,
             resize: tuple[int, int] | None = None) -> list[tuple[MediaItem, np.ndarray]]:
    """Every input decoded in memory, in listing order (fine for benchmark-sized sets)."""
    return list(iter_decoded(list_inputs(specs, data_root, resize)))


def data_root_from_env() -> Path:
    """``RAYDETECT_DATA_ROOT`` when set, else ``../shared/data`` next to the repository."""
    return Path(os.environ.get("RAYDETECT_DATA_ROOT", DEFAULT_DATA_ROOT))


PEER_PYTHON_ENV = "RAYDETECT_PEER_PYTHON"


def peer_python_from_env() -> Path | None:
    """The peer environment's interpreter named by ``RAYDETECT_PEER_PYTHON``, else None (then pass
    ``--peer-python``)."""
    value = os.environ.get(PEER_PYTHON_ENV)
    return Path(value) if value else None


def check_peer_python(parser, peer_python: Path | None) -> None:
    """Stop ``parser`` with a clear message unless ``peer_python`` names an existing interpreter."""
    if peer_python is None:
        parser.error(f"the peer's interpreter is needed: pass --peer-python PATH or set {PEER_PYTHON_ENV} "
                     "(how to install the peer environment: docs/benchmarks.md)")
    if not peer_python.exists():
        parser.error(f"peer interpreter not found: {peer_python}")
