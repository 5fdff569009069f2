"""Work units of the offline job: a video is split into frame-range shards, a shard is decoded into chunks.

- :func:`plan_shards` probes one video and returns its shards: ``[start, start + shard_frames)``
  frame ranges (the last one open-ended, so a container that under-counts loses nothing).
- :func:`decode_chunks` decodes one shard and yields chunks: up to ``chunk_bytes`` of sampled
  frames as raw RGB bytes, plus their indices. Each chunk is one unit of detection and one
  output file. The last chunk of a shard carries the shard's remaining accounting (it may hold
  no frame).

With ``detect_every`` K > 1 the detector runs on every K-th sampled frame only (:class:`DetectedFrames`)
and the frames between get faces interpolated along their tracks, which needs both detected frames
around them in one chunk. So shards start on a detected frame, chunks end on one, and every chunk
but a video's last also carries the next chunk's first frame (``lookahead``: detected again there,
used to link and interpolate, never written twice). Each sampled frame then belongs to exactly one
chunk, whatever the shard and chunk sizes.

Every record is a flat dict of strings, numbers and bytes that never holds None (``""`` for
"no label" and "no error", ``stop = -1`` for "to the end", frame indices as int64 bytes), so
every Arrow block of a stage has the same schema whichever rows it holds. An input that fails
yields one record with ``error`` set and the job goes on. No Ray here.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from raydetect.offline.retrying_io import IoStats, RetryPolicy
from raydetect.offline.video import (
    FrameRange, FrameSelector, Sampling, VideoError, VideoInfo, evenly_spaced, fit_max_side, probe,
)


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
        detect_every: run the detector on every K-th sampled frame only (``--detect-every``; 1: all).
    """

    shard_frames: int = 300
    sampling: Sampling = field(default_factory=Sampling)
    max_side: int | None = None
    keep_full_frames: bool = False
    chunk_bytes: int | None = None
    storage_options: dict | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    detect_every: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.detect_every, bool) or not isinstance(self.detect_every, int) or self.detect_every < 1:
            raise ValueError(f"detect_every must be a whole number >= 1, got {self.detect_every!r}")
        if self.shard_frames < 1:
            raise ValueError(f"shard_frames must be >= 1, got {self.shard_frames}")
        if self.max_side is not None and self.max_side < 12:
            raise ValueError(f"max_side must be at least 12 pixels, got {self.max_side}")
        if self.chunk_bytes is not None and self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {self.chunk_bytes}")


# Frames handed to a detector at once: a GPU pass takes dozens of full-HD frames within its budget,
# a CPU actor does better with small chunks that spread over actors and report progress often.
CHUNK_BYTES = {"cuda": 256 << 20, "cpu": 32 << 20}


class DetectedFrames:
    """The sampled frames the detector runs on: sampled frames number 0, K, 2K, ... of a video.

    Like the sampling it depends on the frame index alone, so every shard agrees. ``wants(i)``:
    is frame i detected; ``first_from(i)``: the first detected frame at or after i (None: none
    before ``frame_count``).
    """

    def __init__(self, sampling: Sampling, info: VideoInfo, detect_every: int):
        self.frame_count = info.frame_count
        k = detect_every
        self._picked: list[int] | None = None
        self._step: int | None = None
        if k == 1:
            self._selector = sampling.selector(info)
        elif sampling.every is not None:
            self._step = sampling.every * k
        elif sampling.fps is not None and sampling.fps < info.fps:
            # A sampled frame opens the m-th 1/fps interval; it is detected when m % K == 0, which
            # is exactly the first frame of each K/fps interval.
            self._selector = Sampling(fps=sampling.fps / k).selector(info)
        elif sampling.count is not None and sampling.count < info.frame_count:
            self._picked = evenly_spaced(info.frame_count, sampling.count)[::k]
        else:  # every frame is sampled
            self._step = k
        if self._step is not None:
            step = self._step
            self._selector = FrameSelector(lambda i: i % step == 0, last=None)
        elif self._picked is not None:
            self._selector = FrameSelector(frozenset(self._picked).__contains__, last=self._picked[-1])

    def wants(self, index: int) -> bool:
        return self._selector.wants(index)

    def first_from(self, index: int) -> int | None:
        if self._step is not None:
            found = -(-index // self._step) * self._step
        elif self._picked is not None:
            position = bisect.bisect_left(self._picked, index)
            found = self._picked[position] if position < len(self._picked) else None
        else:
            found = next((i for i in range(index, self.frame_count) if self.wants(i)), None)
        return found if found is not None and found < self.frame_count else None


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
    if options.detect_every > 1:
        # Every shard starts on a detected frame; one that holds none is folded into the one before.
        detected = DetectedFrames(options.sampling, info, options.detect_every)
        snapped = {}
        for start in starts:
            first = detected.first_from(start)
            if first is not None and first not in snapped.values():
                snapped[start] = first
        starts = [snapped[s] for s in sorted(snapped)] or [0]
        return [
            _shard(base, "", start // options.shard_frames, len(starts), number, start,
                   -1 if number == len(starts) - 1 else starts[number + 1], info)
            for number, start in enumerate(starts)
        ]
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
        "detect": b"",
        "lookahead": False,
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
    detected = DetectedFrames(options.sampling, info, options.detect_every)
    stop = None if shard["stop"] < 0 else shard["stop"]
    # With interpolation the next shard's first frame (detected) is read too, as this shard's lookahead.
    lookahead_at = stop if options.detect_every > 1 and stop is not None else None
    read_stop = stop + 1 if lookahead_at is not None else stop
    required = read_stop if read_stop is not None else shard["frame_count"] - truncation_slack(shard["frame_count"])
    frames = FrameRange(
        shard["video"], shard["start"], read_stop, selector, info.fps, required_end=required,
        storage_options=options.storage_options, retry=options.retry,
    )
    max_side = None if options.keep_full_frames else options.max_side
    position = {k: shard[k] for k in ("shard_index", "num_shards", "shard_number")}
    chunk = _ChunkBuffer()
    chunk_index = 0
    reported_reads = 0
    started = time.perf_counter()
    try:
        for frame in frames:
            image, fx, fy = fit_max_side(frame.image, max_side)
            is_detected = detected.wants(frame.index)
            if frame.index == lookahead_at:
                chunk.add(frame, image, (fx, fy), True)
                chunk.lookahead = True
                break
            if chunk.images and (
                image.shape != chunk.images[0].shape
                or (_full(chunk.images, image, options.chunk_bytes) and (options.detect_every == 1 or is_detected))
            ):
                interpolating = options.detect_every > 1 and image.shape == chunk.images[0].shape
                if interpolating:  # the chunk ends on this detected frame, which also opens the next one
                    chunk.add(frame, image, (fx, fy), True)
                    chunk.lookahead = True
                yield _chunk(shard, position, chunk_index, chunk,
                             frames.frames_read - 1 - reported_reads, time.perf_counter() - started, last=False,
                             io_retries=0)
                reported_reads = frames.frames_read - 1
                chunk_index += 1
                chunk, started = _ChunkBuffer(), time.perf_counter()
            chunk.add(frame, image, (fx, fy), is_detected)
    except VideoError as exc:
        message = str(exc)
    except Exception as exc:  # a decoder failure of one input must not stop the job
        message = f"{shard['video']}: decoding failed at frame {shard['start'] + frames.frames_read}: " \
                  f"{type(exc).__name__}: {exc}"
    else:
        # The lookahead frame belongs to the next shard's accounting; storage retries are counted when
        # the decoder closes, so the last record carries them all.
        reads = frames.frames_read - reported_reads - (1 if chunk.lookahead else 0)
        yield _chunk(shard, position, chunk_index, chunk, reads, time.perf_counter() - started, last=True,
                     io_retries=shard["io_retries"] + frames.io_retries)
        return
    yield error_record(shard, message, chunk_index=chunk_index, frames_read=frames.frames_read - reported_reads,
                       seconds=time.perf_counter() - started, io_retries=shard["io_retries"] + frames.io_retries,
                       **position,
                       **{k: shard[k] for k in ("frame_count", "fps", "width", "height")})


class _ChunkBuffer:
    """The frames of the chunk being filled: images as shipped, indices, detect flags."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.indices: list[int] = []
        self.detect: list[bool] = []
        self.lookahead = False
        self.scale = (1.0, 1.0)
        self.size = (0, 0)

    def add(self, frame, image: np.ndarray, scale: tuple[float, float], detect: bool) -> None:
        if not self.images:
            self.size = frame.image.shape[:2]  # after OpenCV's rotation; the container's may differ
            self.scale = scale
        self.images.append(image)
        self.indices.append(frame.index)
        self.detect.append(detect)


def _full(buffered: list[np.ndarray], image: np.ndarray, chunk_bytes: int | None) -> bool:
    return (len(buffered) + 1) * image.nbytes > (chunk_bytes or CHUNK_BYTES["cpu"])


def _chunk(shard, position, chunk_index, chunk: _ChunkBuffer, frames_read, seconds, last, io_retries) -> dict:
    """A chunk record; ``chunk.size``: (height, width) of the decoded frames before any downscale."""
    images = chunk.images
    height, width = images[0].shape[:2] if images else (0, 0)
    size = chunk.size if images else (shard["height"], shard["width"])
    return {
        "video": shard["video"],
        "label": shard["label"],
        "key": shard["key"],
        "error": "",
        **position,
        "chunk_index": chunk_index,
        "last_chunk": last,
        "frame_indices": np.asarray(chunk.indices, np.int64).tobytes(),
        "detect": np.asarray(chunk.detect, np.uint8).tobytes(),
        "lookahead": bool(chunk.lookahead),
        "frames_read": int(frames_read),
        "frame_count": shard["frame_count"],
        "fps": shard["fps"],
        "width": int(size[1]),
        "height": int(size[0]),
        "frame_height": height,
        "frame_width": width,
        "scale_x": float(chunk.scale[0]),
        "scale_y": float(chunk.scale[1]),
        "pixels": b"".join(memoryview(np.ascontiguousarray(image)) for image in images) if images else b"",  # one copy
        "seconds": float(seconds),
        "io_retries": int(io_retries),
    }


def frame_indices(record: dict) -> np.ndarray:
    """The frame indices of a chunk record, (N,) int64."""
    return np.frombuffer(record["frame_indices"], np.int64)


def detect_flags(record: dict) -> np.ndarray:
    """Which frames of a chunk record go to the detector, (N,) bool."""
    return np.frombuffer(record["detect"], np.uint8).astype(bool)


def chunk_frames(record: dict) -> np.ndarray:
    """The frames of a chunk record as one (N, H, W, 3) uint8 array: a read-only view of its pixel
    bytes (``bytes`` or any buffer, e.g. a zero-copy ``pyarrow.Buffer``), not a copy."""
    count = len(frame_indices(record))
    if count == 0:
        return np.zeros((0, 0, 0, 3), np.uint8)
    shape = (count, record["frame_height"], record["frame_width"], 3)
    return np.frombuffer(record["pixels"], np.uint8).reshape(shape)
