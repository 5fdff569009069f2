"""Work units of the offline job: a video is split into frame-range shards, a shard is decoded into chunks.

- :func:`plan_shards` probes one video and returns its shards: ``[start, start + shard_frames)``
  frame ranges (the last one open-ended, so a container that under-counts loses nothing).
- :func:`decode_chunks` decodes one shard and yields chunks: up to ``chunk_bytes`` of sampled
  frames as raw RGB bytes, plus their indices. Each chunk is one unit of detection and one
  output file. The last chunk of a shard carries the shard's remaining accounting (it may hold
  no frame).

Every record is a flat dict of strings, numbers and bytes that never holds None (``""`` for
"no label" and "no error", ``stop = -1`` for "to the end", frame indices as int64 bytes), so
every Arrow block of a stage has the same schema whichever rows it holds. An input that fails
yields one record with ``error`` set and the job goes on. No Ray here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from raydetect.offline.retrying_io import IoStats, RetryPolicy
from raydetect.offline.video import FrameRange, Sampling, VideoError, VideoInfo, fit_max_side, probe


@dataclass(frozen=True)
class ShardOptions:
    """How inputs become chunks.

    Attributes:
        shard_frames: frames of the stream per shard (decoded, sampled or not).
        sampling: which frames go to the detector.
        max_side: downscale frames so their longer side is at most this (None: keep).
        keep_full_frames: ship full-resolution frames (crops are cut from them) and let the
            detector side downscale; otherwise frames are downscaled here, before transfer.
        chunk_bytes: raw RGB bytes of frames per chunk at most (at least one frame); None: the
            pipeline picks by device (:data:`CHUNK_BYTES`).
        storage_options: fsspec filesystem keyword arguments for URLs.
        retry: how transient storage failures of URLs are retried (and their timeouts).
    """

    shard_frames: int = 300
    sampling: Sampling = field(default_factory=Sampling)
    max_side: int | None = None
    keep_full_frames: bool = False
    chunk_bytes: int | None = None
    storage_options: dict | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.shard_frames < 1:
            raise ValueError(f"shard_frames must be >= 1, got {self.shard_frames}")
        if self.max_side is not None and self.max_side < 12:
            raise ValueError(f"max_side must be at least 12 pixels, got {self.max_side}")
        if self.chunk_bytes is not None and self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {self.chunk_bytes}")


# Frames handed to a detector at once: a GPU pass takes dozens of full-HD frames within its budget,
# a CPU actor does better with small chunks that spread over actors and report progress often.
CHUNK_BYTES = {"cuda": 256 << 20, "cpu": 32 << 20}


def truncation_slack(frame_count: int) -> int:
    """Frames a stream may fall short of the container's count before it counts as truncated:
    counts derived from a duration (formats without an index) can be off by a frame or two."""
    return max(2, frame_count // 100)


def plan_shards(item: dict, options: ShardOptions) -> list[dict]:
    """The shards of one input ``{"video", "label", "key"}``; one shard carrying ``error`` if it
    cannot be probed. Every shard has the same fields (see :func:`_shard`)."""
    base = {"video": item["video"], "label": item.get("label") or "", "key": item["key"]}
    io = IoStats()
    try:
        info = probe(item["video"], options.storage_options, options.retry, io)
    except VideoError as exc:
        return [_shard(base, str(exc), io_retries=io.retries)]
    except Exception as exc:  # an unexpected failure of one input must not stop the job
        return [_shard(base, f"{item['video']}: cannot probe: {type(exc).__name__}: {exc}", io_retries=io.retries)]
    selector = options.sampling.selector(info)
    count = max(1, math.ceil(info.frame_count / options.shard_frames))
    starts = [i * options.shard_frames for i in range(count)]
    if selector.last is not None:  # K evenly spaced frames: shards without one are not needed
        wanted = sorted(i for i in range(selector.last + 1) if selector.wants(i))
        starts = sorted({(i // options.shard_frames) * options.shard_frames for i in wanted}) or [0]
    return [
        _shard(
            base, "", start // options.shard_frames, len(starts), number, start,
            -1 if start == starts[-1] else start + options.shard_frames, info,
            io_retries=io.retries if number == 0 else 0,  # the probe's, counted once per video
        )
        for number, start in enumerate(starts)
    ]


def _shard(base: dict, error: str, shard_index: int = 0, num_shards: int = 1, shard_number: int = 0,
           start: int = 0, stop: int = -1, info: VideoInfo | None = None, io_retries: int = 0) -> dict:
    """A shard: frames ``[start, stop)`` (``stop`` -1: to the end) of one video. ``io_retries``:
    storage retries spent on it so far (the probe's)."""
    return {
        **base,
        "error": error,
        "shard_index": shard_index,
        "num_shards": num_shards,
        "shard_number": shard_number,
        "start": start,
        "stop": stop,
        "frame_count": info.frame_count if info else 0,
        "fps": info.fps if info else 0.0,
        "width": info.width if info else 0,
        "height": info.height if info else 0,
        "io_retries": io_retries,
    }


def error_record(base: dict, message: str, **fields) -> dict:
    """A record that only reports a failure (no frames)."""
    return {
        **base,
        "error": message,
        "shard_index": fields.get("shard_index", 0),
        "num_shards": fields.get("num_shards", 1),
        "shard_number": fields.get("shard_number", 0),
        "chunk_index": fields.get("chunk_index", 0),
        "last_chunk": True,
        "frame_indices": b"",
        "frames_read": fields.get("frames_read", 0),
        "frame_count": fields.get("frame_count", 0),
        "fps": fields.get("fps", 0.0),
        "width": fields.get("width", 0),
        "height": fields.get("height", 0),
        "frame_height": 0,
        "frame_width": 0,
        "scale_x": 1.0,
        "scale_y": 1.0,
        "pixels": b"",
        "seconds": float(fields.get("seconds", 0.0)),
        "io_retries": int(fields.get("io_retries", 0)),
    }


def decode_chunks(shard: dict, options: ShardOptions) -> Iterator[dict]:
    """Decode one shard and yield its chunks (see the module docstring); errors become a record."""
    if shard["error"]:
        yield error_record({k: shard[k] for k in ("video", "label", "key")}, shard["error"],
                           io_retries=shard["io_retries"])
        return
    info = VideoInfo(shard["frame_count"], shard["fps"], shard["width"], shard["height"])
    selector = options.sampling.selector(info)
    stop = None if shard["stop"] < 0 else shard["stop"]
    required = stop if stop is not None else shard["frame_count"] - truncation_slack(shard["frame_count"])
    frames = FrameRange(
        shard["video"], shard["start"], stop, selector, info.fps, required_end=required,
        storage_options=options.storage_options, retry=options.retry,
    )
    max_side = None if options.keep_full_frames else options.max_side
    position = {k: shard[k] for k in ("shard_index", "num_shards", "shard_number")}
    buffered: list[np.ndarray] = []
    indices: list[int] = []
    chunk_index = 0
    reported_reads = 0
    started = time.perf_counter()
    scale = (1.0, 1.0)
    chunk_size = (shard["height"], shard["width"])
    try:
        for frame in frames:
            image, fx, fy = fit_max_side(frame.image, max_side)
            if buffered and (image.shape != buffered[0].shape or _full(buffered, image, options.chunk_bytes)):
                yield _chunk(shard, position, chunk_index, buffered, indices, scale, chunk_size,
                             frames.frames_read - 1 - reported_reads, time.perf_counter() - started, last=False,
                             io_retries=0)
                reported_reads = frames.frames_read - 1
                chunk_index += 1
                buffered, indices, started = [], [], time.perf_counter()
            if not buffered:
                chunk_size = frame.image.shape[:2]  # after OpenCV's rotation; the container's may differ
                scale = (fx, fy)
            buffered.append(image)
            indices.append(frame.index)
    except VideoError as exc:
        message = str(exc)
    except Exception as exc:  # a decoder failure of one input must not stop the job
        message = f"{shard['video']}: decoding failed at frame {shard['start'] + frames.frames_read}: " \
                  f"{type(exc).__name__}: {exc}"
    else:
        # Storage retries are counted when the decoder closes: the last record carries them all.
        yield _chunk(shard, position, chunk_index, buffered, indices, scale, chunk_size,
                     frames.frames_read - reported_reads, time.perf_counter() - started, last=True,
                     io_retries=shard["io_retries"] + frames.io_retries)
        return
    yield error_record(shard, message, chunk_index=chunk_index, frames_read=frames.frames_read - reported_reads,
                       seconds=time.perf_counter() - started, io_retries=shard["io_retries"] + frames.io_retries,
                       **position,
                       **{k: shard[k] for k in ("frame_count", "fps", "width", "height")})


def _full(buffered: list[np.ndarray], image: np.ndarray, chunk_bytes: int | None) -> bool:
    return (len(buffered) + 1) * image.nbytes > (chunk_bytes or CHUNK_BYTES["cpu"])


def _chunk(shard, position, chunk_index, images, indices, scale, size, frames_read, seconds, last,
           io_retries) -> dict:
    """``size``: (height, width) of the decoded frames before any downscale."""
    height, width = images[0].shape[:2] if images else (0, 0)
    return {
        "video": shard["video"],
        "label": shard["label"],
        "key": shard["key"],
        "error": "",
        **position,
        "chunk_index": chunk_index,
        "last_chunk": last,
        "frame_indices": np.asarray(indices, np.int64).tobytes(),
        "frames_read": int(frames_read),
        "frame_count": shard["frame_count"],
        "fps": shard["fps"],
        "width": int(size[1]),
        "height": int(size[0]),
        "frame_height": height,
        "frame_width": width,
        "scale_x": float(scale[0]),
        "scale_y": float(scale[1]),
        "pixels": b"".join(memoryview(np.ascontiguousarray(image)) for image in images) if images else b"",  # one copy
        "seconds": float(seconds),
        "io_retries": int(io_retries),
    }


def frame_indices(record: dict) -> np.ndarray:
    """The frame indices of a chunk record, (N,) int64."""
    return np.frombuffer(record["frame_indices"], np.int64)


def chunk_frames(record: dict) -> np.ndarray:
    """The frames of a chunk record as one (N, H, W, 3) uint8 array: a read-only view of its pixel
    bytes (``bytes`` or any buffer, e.g. a zero-copy ``pyarrow.Buffer``), not a copy."""
    count = len(frame_indices(record))
    if count == 0:
        return np.zeros((0, 0, 0, 3), np.uint8)
    shape = (count, record["frame_height"], record["frame_width"], 3)
    return np.frombuffer(record["pixels"], np.uint8).reshape(shape)
