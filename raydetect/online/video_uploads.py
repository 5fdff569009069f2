"""Video clips received over HTTP: check the container, spool to a private temp file, sample frames.

FFmpeg is handed only a temp file this module created, and only after the first bytes show
a plain container (MP4/MOV, AVI, Matroska/WebM). Playlists and other formats that make
FFmpeg open further files or URLs (HLS, concat lists, SDP, ...) are refused before FFmpeg
sees them, and the ingress process tells FFmpeg to use no protocol but ``file``
(:data:`FFMPEG_CAPTURE_OPTIONS`).
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

from raydetect.online.http_errors import RequestRejected
from raydetect.online.http_params import VideoParams

# FFmpeg options that let it open nothing but local files. OpenCV reads them from the
# environment at each capture open; the Serve ingress sets them in its own process.
FFMPEG_CAPTURE_OPTIONS = ("OPENCV_FFMPEG_CAPTURE_OPTIONS", "protocol_whitelist;file")
VIDEO_MEDIA_TYPES = {
    "video/mp4": "mp4",
    "video/quicktime": "mp4",
    "video/x-msvideo": "avi",
    "video/avi": "avi",
    "video/msvideo": "avi",
    "video/x-matroska": "mkv",
    "video/webm": "mkv",
    "application/octet-stream": None,
}
CONTAINER_NAMES = "MP4, MOV, AVI, MKV or WebM"
_MP4_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")


def sniff_container(data: bytes) -> str | None:
    """``"mp4"`` (MP4 / MOV / 3GP), ``"avi"`` or ``"mkv"`` (Matroska / WebM) from the first bytes; else None."""
    if data[4:8] in _MP4_BOX_TYPES:
        return "mp4"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


class UploadedClip:
    """A clip from a request body in a private temp file, checked against the limits.

    Use as a context manager; the temp file is removed on exit. Construction does blocking
    I/O and probing: call it from a worker thread in async code.

    Raises:
        RequestRejected: 400 for something that is not a readable video or has frames under
            12 pixels a side, 413 for a clip over the frame or frame-size limits.
    """

    def __init__(self, data: bytes, max_frames: int, max_frame_pixels: int):
        from raydetect.core.image_checks import MIN_SIDE
        from raydetect.offline.video import VideoError, probe

        container = sniff_container(data)
        if container is None:
            raise RequestRejected(400, f"body is not a video container: expected {CONTAINER_NAMES} data")
        handle, self.path = tempfile.mkstemp(prefix="raydetect-clip-", suffix=f".{container}")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            try:
                self.info = probe(self.path)
            except VideoError as exc:
                # The message names our temp file; the client only needs the reason.
                reason = str(exc).replace(f"{self.path}: ", "")
                raise RequestRejected(400, f"could not read the video: {reason}") from None
            pixels = self.info.width * self.info.height
            if min(self.info.width, self.info.height) < MIN_SIDE:
                raise RequestRejected(
                    400, f"video frames are {self.info.width}x{self.info.height}, smaller than the "
                    f"detector's {MIN_SIDE}-pixel window"
                )
            if pixels > max_frame_pixels:
                raise RequestRejected(
                    413,
                    f"video frames are {self.info.width}x{self.info.height}; the limit is "
                    f"{max_frame_pixels / 1e6:g} megapixels per frame",
                )
            if self.info.frame_count > max_frames:
                raise RequestRejected(
                    413, f"clip has {self.info.frame_count} frames; the limit is {max_frames} frames"
                )
            self.max_frames = max_frames
        except BaseException:
            self.close()
            raise

    def frames(self, params: VideoParams) -> Iterator:
        """Sampled :class:`raydetect.offline.video.Frame` objects in order, decoding at most ``max_frames``."""
        from raydetect.offline.video import FrameRange, Sampling

        sampling = Sampling(every=params.every, fps=params.fps)
        return iter(FrameRange(self.path, 0, self.max_frames, sampling.selector(self.info), self.info.fps))

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "UploadedClip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
