"""Videos in, frames out: open any fsspec location with OpenCV, decode a frame range exactly, sample.

Frame indices count frames in decode order from 0, so the same index always names the same
picture whichever shard decodes it. Timestamps are nominal: ``frame_index / fps`` with the
container's average frame rate (exact for the constant-rate videos of datasets; for a
variable-rate video they are the index on an even clock, not the presentation time).

Local paths and ``file://`` URLs are opened by FFmpeg directly; other URLs (``s3://``,
``gs://``, ``memory://``, ...) through an fsspec file object handed to OpenCV's stream
reader, so only the byte ranges the demuxer asks for are fetched and nothing is copied to disk.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np

from raydetect.errors import RaydetectError
from raydetect.offline.retrying_io import IoStats, RetryingReader, RetryPolicy, StorageError, with_timeouts

# FFmpeg's own log lines ("moov atom not found", ...) would flood worker logs on bad inputs;
# every failure is reported through VideoError instead.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp",
)

# Decoders FFmpeg also uses for single still images; a file holding one is not a video.
_IMAGE_FOURCCS = {"MJPG", "PNG ", "png ", "BMP ", "bmp ", "WEBP", "webp", "GIF ", "gif "}


class VideoError(RaydetectError, ValueError):
    """A video cannot be opened or decoded: missing, unreadable, truncated, corrupt or not a video."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video stream.

    Attributes:
        frame_count: frames announced by the container (exact for MP4 and AVI indexes; an
            estimate from the duration for formats that have none).
        fps: average frame rate, frames per second.
        width, height: frame size in pixels after OpenCV's automatic rotation.
    """

    frame_count: int
    fps: float
    width: int
    height: int


def is_local(location: str) -> bool:
    """True for a plain path or a ``file://`` URL, which FFmpeg can open by itself."""
    return "://" not in location or location.startswith("file://")


def local_path(location: str) -> str:
    """The file system path of a plain path or ``file://`` URL (percent-escapes decoded)."""
    if not location.startswith("file://"):
        return location
    from urllib.parse import unquote

    return unquote(location[len("file://"):])


@contextlib.contextmanager
def open_video(
    location: str, storage_options: dict | None = None, retry: RetryPolicy | None = None,
    io_stats: IoStats | None = None,
) -> Iterator[cv2.VideoCapture]:
    """An opened ``cv2.VideoCapture`` for a path or fsspec URL; raises VideoError if it is no video.

    ``storage_options``: keyword arguments for the fsspec filesystem of a URL (endpoint, credentials).
    ``retry``: how transient storage failures of a URL are retried (default :class:`RetryPolicy()`);
    ``io_stats``, if given, counts the retries.
    """
    with _open(location, storage_options, retry, io_stats) as (capture, _):
        yield capture


@contextlib.contextmanager
def _open(location: str, storage_options: dict | None, retry: RetryPolicy | None, io_stats: IoStats | None):
    """``(capture, reader)``: ``reader`` is the :class:`RetryingReader` of a URL (None for a local path),
    whose ``failure`` tells a storage failure from the end of the stream."""
    with contextlib.ExitStack() as stack:
        reader = None
        if is_local(location):
            path = local_path(location)
            if not os.path.exists(path):
                raise VideoError(f"{location}: no such file")
            if os.path.isdir(path):
                raise VideoError(f"{location}: is a directory, not a video")
            if os.path.getsize(path) == 0:
                raise VideoError(f"{location}: empty file (0 bytes)")
            capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        else:
            reader = _remote_reader(location, storage_options, retry or RetryPolicy())
            # Count retries whatever happens next; hold our own reference to the reader: OpenCV
            # drops its reference on release() without the GIL, which must not be the last one.
            stack.callback(reader.close)
            if io_stats is not None:
                stack.callback(lambda: io_stats.add(reader.retries))
            try:
                reader.start()
            except StorageError as exc:
                raise VideoError(f"{location}: {exc}") from None
            if reader.size == 0:
                raise VideoError(f"{location}: empty file (0 bytes)")
            capture = cv2.VideoCapture(reader, cv2.CAP_FFMPEG, [])
        stack.callback(capture.release)
        if not capture.isOpened():
            _raise_storage_failure(location, reader)
            raise VideoError(f"{location}: not a readable video (unknown format, truncated or corrupt header)")
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        if fourcc.to_bytes(4, "little").decode("latin-1") in _IMAGE_FOURCCS and frames <= 1:
            raise VideoError(f"{location}: a still image, not a video")
        yield capture, reader


def _remote_reader(location: str, storage_options: dict | None, retry: RetryPolicy) -> RetryingReader:
    """A never-raising reader of a URL: OpenCV's stream reader crashes the process when ``read``
    raises, so storage failures are retried there and otherwise kept in ``reader.failure``."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(location, **with_timeouts(_protocol(location), storage_options,
                                                                     retry.timeout_s))
    except Exception as exc:  # unknown protocol, bad options: say which
        raise VideoError(f"{location}: cannot open ({type(exc).__name__}: {exc})") from exc
    if _protocol(location) in _SIZED_OPENS:
        # Re-opening with the size known saves the store a HEAD request (one less chance to fail).
        return RetryingReader(lambda size: fs.open(path, "rb", **({"size": size} if size else {})), retry)
    return RetryingReader(lambda size: fs.open(path, "rb"), retry)


# fsspec filesystems whose open() takes the object's size.
_SIZED_OPENS = ("http", "https", "s3", "s3a")


def _protocol(location: str) -> str:
    return location.split("://", 1)[0].lower()


def _raise_storage_failure(location: str, reader: RetryingReader | None) -> None:
    """Raise the storage failure behind an early end of the stream, if there was one."""
    if reader is not None and reader.failure is not None:
        raise VideoError(f"{location}: {reader.failure}")


def probe(
    location: str, storage_options: dict | None = None, retry: RetryPolicy | None = None,
    io_stats: IoStats | None = None,
) -> VideoInfo:
    """Frame count, frame rate and size of a video, read from its container (decodes nothing).
    ``retry``, ``io_stats``: as for :func:`open_video`."""
    with _open(location, storage_options, retry, io_stats) as (capture, reader):
        try:
            return _info(location, capture)
        except VideoError:
            _raise_storage_failure(location, reader)
            raise


def _info(location: str, capture: cv2.VideoCapture) -> VideoInfo:
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    fps = capture.get(cv2.CAP_PROP_FPS)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"{location}: the container gives no frame rate")
    if not math.isfinite(count) or count < 1:
        raise VideoError(f"{location}: the container announces no frames")
    if width <= 0 or height <= 0:
        raise VideoError(f"{location}: the container gives no frame size")
    return VideoInfo(frame_count=int(round(count)), fps=float(fps), width=width, height=height)


# --------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Sampling:
    """Which frames of a video go to the detector. At most one of the three is set.

    Attributes:
        every: every Nth frame: indices 0, N, 2N, ...
        fps: a target rate: the first frame of each 1/fps-second interval (all frames when the
            video's own rate is not higher).
        count: K frames evenly spaced over the video: the middle frame of each of K equal
            segments of the announced frame count (all frames when K >= the count).
    """

    every: int | None = None
    fps: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.every, self.fps, self.count) if v is not None]
        if len(given) > 1:
            raise ValueError("choose one of every, fps and count")
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")

    def selector(self, info: VideoInfo) -> "FrameSelector":
        """A predicate on frame indices for one video; it depends on the index alone, so every
        shard of the video picks the same frames."""
        if self.every is not None:
            n = self.every
            return FrameSelector(lambda i: i % n == 0, last=None)
        if self.fps is not None and self.fps < info.fps:
            ratio = self.fps / info.fps
            # Frame i opens a new interval when floor(i * ratio) steps up; frame 0 always does.
            return FrameSelector(lambda i: i == 0 or math.floor(i * ratio) > math.floor((i - 1) * ratio), None)
        if self.count is not None and self.count < info.frame_count:
            picked = evenly_spaced(info.frame_count, self.count)
            chosen = frozenset(picked)
            return FrameSelector(chosen.__contains__, last=picked[-1])
        return FrameSelector(lambda i: True, last=None)


@dataclass(frozen=True)
class FrameSelector:
    """``wants(index)``: is this frame sampled; ``last``: no frame after this index is (None: unknown)."""

    wants: Callable[[int], bool]
    last: int | None


def evenly_spaced(frame_count: int, k: int) -> list[int]:
    """The middle index of each of ``k`` equal segments of ``range(frame_count)``, ascending."""
    if k >= frame_count:
        return list(range(frame_count))
    return [((2 * j + 1) * frame_count) // (2 * k) for j in range(k)]


# --------------------------------------------------------------------------- decoding
@dataclass
class Frame:
    """One decoded frame: ``image`` is (H, W, 3) uint8 RGB at the video's full resolution."""

    index: int
    timestamp_s: float
    image: np.ndarray


class FrameRange:
    """Decode frames ``[start, stop)`` of a video (``stop`` None: to the end), keeping the sampled ones.

    Iterating yields :class:`Frame` objects one at a time, so memory holds one frame. Frames
    before ``start`` are skipped by a seek (OpenCV seeks to the previous keyframe and decodes
    forward to the exact frame), or by decoding from the first frame when OpenCV cannot confirm
    the seek. Frames that are not sampled are decoded but not converted (``grab``).

    ``required_end``: the stream must reach this index, else iteration raises VideoError
    (truncated file). ``retry``: how transient storage failures of a URL are retried. After
    iteration ``frames_read`` counts the frames of the range decoded and ``io_retries`` the storage
    retries it took; a storage failure that retries could not cure raises VideoError naming it.
    """

    def __init__(
        self,
        location: str,
        start: int,
        stop: int | None,
        selector: FrameSelector,
        fps: float,
        required_end: int = 0,
        storage_options: dict | None = None,
        retry: RetryPolicy | None = None,
    ):
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"bad frame range [{start}, {stop})")
        self.location = location
        self.start = start
        self.stop = stop
        self.selector = selector
        self.fps = fps
        self.required_end = required_end
        self.storage_options = storage_options
        self.retry = retry
        self.frames_read = 0
        self.io_stats = IoStats()

    @property
    def io_retries(self) -> int:
        return self.io_stats.retries

    def __iter__(self) -> Iterator[Frame]:
        stop = self.stop
        if self.selector.last is not None:
            stop = self.selector.last + 1 if stop is None else min(stop, self.selector.last + 1)
        opening = (self.location, self.storage_options, self.retry, self.io_stats)
        with contextlib.ExitStack() as stack:
            capture, reader = stack.enter_context(_open(*opening))
            position = 0
            if self.start > 0:
                if _seek(capture, self.start):
                    position = self.start
                else:  # decode from the first frame instead, on a fresh capture
                    _raise_storage_failure(self.location, reader)
                    stack.close()
                    capture, reader = stack.enter_context(_open(*opening))
            while stop is None or position < stop:
                wanted = position >= self.start and self.selector.wants(position)
                if wanted:
                    ok, bgr = capture.read()
                else:
                    ok, bgr = capture.grab(), None
                if not ok:
                    # The end of the stream, or a storage failure that retries could not cure.
                    _raise_storage_failure(self.location, reader)
                    break
                if position >= self.start:
                    self.frames_read += 1
                if wanted:
                    yield Frame(position, position / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                position += 1
        if position < min(self.required_end, stop if stop is not None else self.required_end):
            raise VideoError(
                f"{self.location}: truncated or corrupt: the stream ends at frame {position}, "
                f"frame {self.required_end - 1} was expected"
            )


def _seek(capture: cv2.VideoCapture, index: int) -> bool:
    """Move the capture so the next frame read is ``index``; False if OpenCV cannot confirm it."""
    return bool(capture.set(cv2.CAP_PROP_POS_FRAMES, index)) and int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == index


def fit_max_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """Downscale ``image`` (H, W, 3) so its longer side is at most ``max_side`` pixels (area averaging).

    Returns ``(image, fx, fy)``: the image (the same array if already small enough) and the
    factors mapping its pixel coordinates back to the input's (``x_in = x * fx``; 1.0 when unchanged).
    """
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image, 1.0, 1.0
    scale = max_side / max(height, width)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    small = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)
    return small, width / new_width, height / new_height
