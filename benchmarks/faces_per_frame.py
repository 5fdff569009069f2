"""Time per image against the number of faces in it, raydetect against the peer MTCNN (facenet-pytorch 2.6.0).

After P-Net, MTCNN's cost grows with the candidates R-Net and O-Net examine, and those grow with the faces in
the frame. raydetect cuts and resamples every candidate of a stage in one batched pass; the peer crops and
resizes them one box at a time in a Python loop. This benchmark shows how each side's time per image follows
the faces in it, on images from 0 to about 300 faces (shared negatives, photos, video frames and crowds).

Both detectors run as in ``benchmarks/detector_speed.py``: the peer as a persistent worker in its own
environment (``benchmarks/peer/run_peer.py --serve``), ours in this process, torch threads 2 on each side,
``min_face_size`` 20, one image per detect call. Each image is detected once by both, untimed, before timing
(first-call allocations at each size are not throughput). Then, round by round, the two alternate image by
image (which one goes first flips every round), so load from other work on a shared machine hits both within
seconds. Reported per image: the median wall time of each side over the rounds, the faces found and the R-Net
/ O-Net candidates (``FaceDetector.last_stats``; the peer's counted by forward hooks).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/faces_per_frame.py --rounds 3 --output faces_per_frame.json
    .venv/bin/python benchmarks/plot_results.py faces-per-frame faces_per_frame.json \
        --output docs/img/faces_per_frame.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media_inputs  # noqa: E402  (numpy + OpenCV only; shared with the peer environment)
from detector_speed import MIN_FACE_SIZE, PeerWorker, _cpu_name  # noqa: E402

# From 0 to 312 faces at min_face_size 20 (counts from the agreement runs), native sizes 0.2 to 3.1 Mpx.
DEFAULT_INPUTS = (
    "negatives/aero3.jpg",                           # 0 faces, 640x480
    "negatives/leuvenA.jpg",                         # 0, 751x563
    "videos/vtest.avi@frames=0",                     # 0, 768x576 surveillance frame
    "photos/obama-480p.jpg",                         # 1, 853x480
    "videos/Megamind.avi@frames=108",                # 1, 720x528
    "photos/two_people.jpg",                         # 2, 1126x661
    "videos/short_hamilton_clip.mp4@frames=225",     # 4, 640x360
    "photos/multiface.jpg",                          # 6, 1200x630
    "videos/street_crowd_1080p.mp4@frames=10",       # 7, 1920x1080
    "crowds/ultralight_imgs_15.jpg",                 # 16, 1024x768
    "crowds/ultralight_imgs_10.jpg",                 # 20, 1024x715
    "photos/dlib/bald_guys.jpg",                     # 24, 1986x1545
    "crowds/retinaface_bubbliiiing_timg.jpg",        # 48, 1280x719
    "crowds/ultralight_imgs_1.jpg",                  # 52, 720x478
    "crowds/ultralight_imgs_26.jpg",                 # 77, 1024x559
    "crowds/ultralight_imgs_27.jpg",                 # 102, 1024x609
    "crowds/ultralight_imgs_25.jpg",                 # 144, 1024x675
    "crowds/ultralight_imgs_17.jpg",                 # 312, 1600x898
)


def time_ours(detector, rgb) -> tuple[float, dict]:
    """Wall seconds of one ``detect([rgb])`` call and its ``last_stats``."""
    started = time.perf_counter()
    detector.detect([rgb])
    return time.perf_counter() - started, dict(detector.last_stats)


def measure(peer: PeerWorker, detector, decoded: list, rounds: int, progress=None) -> list[dict]:
    """Both detectors on every image, ``rounds`` times, alternating image by image.

    Returns one record per image (input order): key, width, height, the P-Net pixels, both sides' faces and
    R-Net / O-Net candidates, and their wall seconds per round (``peer_seconds``, ``ours_seconds``).
    """
    records = []
    for item, rgb in decoded:
        records.append({"image": item.key, "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                        "peer_seconds": [], "ours_seconds": []})
    for round_index in range(rounds):
        for record, (item, rgb) in zip(records, decoded):
            peer_first = round_index % 2 == 0
            for side in ("peer", "ours") if peer_first else ("ours", "peer"):
                if side == "peer":
                    reply = peer.detect(item.key)
                    record["peer_seconds"].append(reply["seconds"])
                    record["peer_stats"] = reply["stats"]
                else:
                    seconds, stats = time_ours(detector, rgb)
                    record["ours_seconds"].append(seconds)
                    record["ours_stats"] = {k: stats[k] for k in
                                            ("pnet_pixels", "rnet_candidates", "onet_candidates", "faces")}
        if progress:
            progress(round_index, records)
    return records


def summarize(records: list[dict]) -> list[dict]:
    """Per image, sorted by the faces we found: medians in ms, the speed-up (peer / ours) and ms per candidate.

    ``ours_ms_per_rnet_candidate`` divides the whole image's time by its R-Net candidates (None without any):
    an upper bound on the cost of a candidate, which P-Net's share inflates on images with few.
    """
    rows = []
    for r in records:
        peer_ms = statistics.median(r["peer_seconds"]) * 1000
        ours_ms = statistics.median(r["ours_seconds"]) * 1000
        ours, peer = r["ours_stats"], r["peer_stats"]
        rows.append({
            "image": r["image"], "width": r["width"], "height": r["height"], "rounds": len(r["ours_seconds"]),
            "faces": ours["faces"], "peer_faces": peer["faces"],
            "pnet_pixels": ours["pnet_pixels"],
            "rnet_candidates": ours["rnet_candidates"], "onet_candidates": ours["onet_candidates"],
            "peer_rnet_candidates": peer["rnet_candidates"], "peer_onet_candidates": peer["onet_candidates"],
            "peer_ms": peer_ms, "ours_ms": ours_ms, "speedup": peer_ms / ours_ms,
            "peer_ms_range": [min(r["peer_seconds"]) * 1000, max(r["peer_seconds"]) * 1000],
            "ours_ms_range": [min(r["ours_seconds"]) * 1000, max(r["ours_seconds"]) * 1000],
            "peer_ms_per_rnet_candidate": peer_ms / peer["rnet_candidates"] if peer["rnet_candidates"] else None,
            "ours_ms_per_rnet_candidate": ours_ms / ours["rnet_candidates"] if ours["rnet_candidates"] else None,
        })
    return sorted(rows, key=lambda row: (row["faces"], row["rnet_candidates"]))


def candidate_cost_fit(rows: list[dict]) -> dict:
    """Per side, the least-squares line ms = intercept + slope x R-Net candidates over the images.

    ``ms_per_1000_rnet`` (the slope x 1000) is the time that 1,000 more R-Net candidates, with the O-Net
    candidates and faces that come with them, add to an image; the intercept absorbs P-Net's share on the
    average image. Empty with fewer than two distinct candidate counts.
    """
    xs = [row["rnet_candidates"] for row in rows]
    if len(set(xs)) < 2:
        return {}
    fit = {}
    for side in ("peer", "ours"):
        slope, intercept = statistics.linear_regression(xs, [row[f"{side}_ms"] for row in rows])
        fit[side] = {"ms_per_1000_rnet": slope * 1000, "intercept_ms": intercept}
    return fit


def print_table(rows: list[dict]) -> None:
    print("| image | size | faces (peer) | R-Net / O-Net candidates | peer ms | raydetect ms | speed-up |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        faces = f"{row['faces']}" + ("" if row["peer_faces"] == row["faces"] else f" ({row['peer_faces']})")
        print(f"| `{row['image']}` | {row['width']}x{row['height']} | {faces} | "
              f"{row['rnet_candidates']:,} / {row['onet_candidates']:,} | {row['peer_ms']:,.0f} | "
              f"{row['ours_ms']:,.0f} | {row['speedup']:.2f}x |")


def source_revision() -> str:
    """The last commit that changed raydetect/, ``+ local changes`` when the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h", "--", "raydetect"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "raydetect"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + local changes" if changed else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", default=list(DEFAULT_INPUTS),
                        help="media specs as in benchmarks/media_inputs.py (default: 18 images, 0 to 312 faces)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="FaceDetector precision: auto, float32, bfloat16")
    parser.add_argument("--peer-python", type=Path, default=media_inputs.peer_python_from_env(),
                        help=f"the peer environment's python (default: ${media_inputs.PEER_PYTHON_ENV})")
    parser.add_argument("--data-root", type=Path, default=media_inputs.data_root_from_env())
    parser.add_argument("--output", type=Path, help="JSON with every round's figures")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    media_inputs.check_peer_python(parser, args.peer_python)

    revision = source_revision()  # before the run: what is imported is what is measured
    import torch

    from raydetect import FaceDetector

    torch.set_num_threads(args.threads)
    decoded = media_inputs.load_all(args.inputs, args.data_root)
    if not decoded:
        parser.error("no images in the given inputs")
    peer = PeerWorker(args.peer_python, list(args.inputs), args.data_root, args.threads)
    detector = FaceDetector(min_face_size=MIN_FACE_SIZE, device="cpu", precision=args.precision)
    try:
        for item, rgb in decoded:  # warm-up, untimed: both sides once on every image
            peer.detect(item.key)
            detector.detect([rgb])

        def progress(index, records):
            peer_s = sum(r["peer_seconds"][-1] for r in records)
            ours_s = sum(r["ours_seconds"][-1] for r in records)
            print(f"[round {index + 1}/{args.rounds}] peer {peer_s:.1f} s, ours {ours_s:.1f} s over "
                  f"{len(records)} images", file=sys.stderr, flush=True)

        records = measure(peer, detector, decoded, args.rounds, progress)
    finally:
        peer.close()

    rows = summarize(records)
    command = " ".join([".venv/bin/python", "benchmarks/faces_per_frame.py",
                        *(argv if argv is not None else sys.argv[1:])])
    machine = {"revision": revision, "cpu": _cpu_name(), "logical_cpus": os.cpu_count(),
               "torch": torch.__version__, "torch_threads": args.threads, "precision": detector.precision,
               "peer": peer.version,
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
               "load_average_at_end": os.getloadavg()[0]}
    print(f"`{command}`\n\n{machine['cpu']}, {machine['logical_cpus']} logical CPUs, torch threads {args.threads}, "
          f"ours: torch {torch.__version__} at {machine['revision']}, {detector.precision}; peer: {peer.version}; "
          f"min_face_size {MIN_FACE_SIZE}; "
          f"{args.rounds} rounds, medians; load average at the end {machine['load_average_at_end']:.1f}\n")
    print_table(rows)
    fit = candidate_cost_fit(rows)
    if fit:
        print("\nLeast-squares line over the images, ms per image against R-Net candidates: "
              + "; ".join(f"{name} {fit[side]['ms_per_1000_rnet']:.0f} ms per 1,000 candidates "
                          f"(+ {fit[side]['intercept_ms']:.0f} ms)"
                          for side, name in (("peer", "peer"), ("ours", "raydetect"))))
    if args.output:
        args.output.write_text(json.dumps({"command": command, "machine": machine, "min_face_size": MIN_FACE_SIZE,
                                           "rows": rows, "fit": fit, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
