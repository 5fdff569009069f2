"""Storage that fails: classify errors, retry the transient ones, and read streams that never raise.

Object stores and HTTP servers fail as a matter of course: 503 SlowDown, 500, throttling, a connection
reset mid-body, a read that stalls. This module owns the rules for all of it:

- :func:`failure_of` names an exception ("HTTP 503", "connection reset", "no such file") and says
  whether it is transient (worth retrying) or permanent (404, 403, a missing file);
- :class:`RetryPolicy` is the bounded exponential backoff with full jitter used for every retry;
- :func:`call_with_retries` runs one storage operation (a listing, a write) under that policy;
- :class:`RetryingReader` is the file object handed to OpenCV's stream reader. OpenCV calls its
  ``read`` from native code, where a raised exception kills the process (see the GUIDE), so it never
  raises: it retries transient failures by re-opening the object and resuming at the exact byte
  offset, and after a permanent failure or the last attempt it answers end-of-file and keeps the real
  cause in ``failure`` for the caller to report.

No Ray here.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from raydetect.errors import RaydetectError

T = TypeVar("T")

# HTTP statuses a server uses for "try again later"; every other 4xx / 5xx is permanent.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Error codes S3-compatible stores send with a throttling or internal-error answer.
TRANSIENT_S3_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException",
})
# Connection-level failures of aiohttp (HTTP, GCS) and botocore (S3), named so neither must be installed.
TRANSIENT_ERROR_NAMES = {
    "ClientPayloadError": "connection cut mid-body",
    "ServerDisconnectedError": "server disconnected",
    "ClientConnectionError": "connection failed",
    "ClientConnectorError": "connection refused",
    "ClientOSError": "connection error",
    "ServerTimeoutError": "timed out",
    "EndpointConnectionError": "connection refused",
    "ConnectionClosedError": "connection closed",
    "ReadTimeoutError": "timed out",
    "ConnectTimeoutError": "timed out",
    "ResponseStreamingError": "connection cut mid-body",
    "IncompleteReadError": "connection cut mid-body",
}


class StorageError(RaydetectError, OSError):
    """A storage operation failed for good: a permanent error, or a transient one after every retry."""


@dataclass(frozen=True)
class Failure:
    """What went wrong, in words (``"HTTP 503"``, ``"connection reset"``), and whether to retry."""

    reason: str
    transient: bool


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter.

    Attributes:
        retries: attempts after the first (0: never retry).
        base_delay_s: the first backoff's ceiling, seconds; it doubles with every retry...
        max_delay_s: ...up to this ceiling. Each wait is uniform in [0, ceiling] (full jitter), so
            many workers hit by the same outage do not return in lockstep.
        timeout_s: a connection or a read that makes no progress for this long fails (and counts
            as transient), so a stalled object cannot hang a task.
    """

    retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not (self.base_delay_s >= 0 and self.max_delay_s >= self.base_delay_s):
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        return random.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2.0 ** retry))


@dataclass
class IoStats:
    """Counts what storage cost a caller: ``retries`` of transient failures, summed over its reads."""

    retries: int = 0

    def add(self, retries: int) -> None:
        self.retries += retries


def failure_of(exc: BaseException) -> Failure:
    """Classify a storage exception. The chain (``__cause__`` / ``__context__``) is searched because
    fsspec re-raises an HTTP 503 met while opening as ``FileNotFoundError``: the status underneath
    decides, so a throttled object is retried, not reported missing."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in chain:
        status = _http_status(error)
        if status == 404:
            return Failure("no such file (HTTP 404)", False)
        if status == 403:
            return Failure("permission denied (HTTP 403)", False)
        if status is not None:
            return Failure(f"HTTP {status}", status in TRANSIENT_STATUSES)
    for error in chain:
        name = type(error).__name__
        if name in TRANSIENT_ERROR_NAMES:
            return Failure(TRANSIENT_ERROR_NAMES[name], True)
        if isinstance(error, ConnectionResetError):
            return Failure("connection reset", True)
        if isinstance(error, (ConnectionError, TimeoutError)):
            return Failure("timed out" if isinstance(error, TimeoutError) else "connection error", True)
        if isinstance(error, _ShortRead):
            return Failure(str(error), True)
    if isinstance(exc, FileNotFoundError):
        return Failure("no such file", False)
    if isinstance(exc, PermissionError):
        return Failure("permission denied", False)
    return Failure(f"{type(exc).__name__}: {exc}", False)


def _http_status(error: BaseException) -> int | None:
    """The HTTP status an exception carries: aiohttp's ``status``, botocore's response metadata, or
    an S3 error code that means throttling (mapped to 503)."""
    status = getattr(error, "status", None)
    if isinstance(status, int) and 400 <= status < 600:
        return status
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code in TRANSIENT_S3_CODES:
            return 503
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and 400 <= status < 600:
            return status
    return None


def give_up_message(failures: list[Failure]) -> str:
    """What a series of failed attempts ends with: ``"HTTP 404"`` (permanent, at once),
    ``"HTTP 503 after 5 attempts"``, or for mixed causes ``"5 attempts failed: timed out (3), HTTP 503 (2)"``."""
    last = failures[-1]
    if not last.transient:
        return last.reason
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure.reason] = counts.get(failure.reason, 0) + 1
    attempts = f"{len(failures)} attempt{'s' if len(failures) != 1 else ''}"
    if len(counts) == 1:
        return f"{last.reason} after {attempts}"
    return f"{attempts} failed: " + ", ".join(f"{reason} ({n})" for reason, n in counts.items())


def call_with_retries(operation: Callable[[], T], policy: RetryPolicy, what: str) -> tuple[T, int]:
    """Run ``operation`` until it succeeds, retrying transient failures under ``policy``.

    Returns ``(result, retries used)``; raises :class:`StorageError` naming ``what`` and the real
    cause (``"s3://b/x: HTTP 503 after 5 attempts"``) once a failure is permanent or the attempts
    are spent.
    """
    failures: list[Failure] = []
    while True:
        try:
            return operation(), len(failures)
        except Exception as exc:
            failures.append(failure_of(exc))
            if not failures[-1].transient or len(failures) > policy.retries:
                raise StorageError(f"{what}: {give_up_message(failures)}") from exc
        time.sleep(policy.delay_s(len(failures) - 1))


class _ShortRead(OSError):
    """The store ended a response before the bytes it announced (counted as a cut connection)."""


def with_timeouts(protocol: str, storage_options: dict | None, timeout_s: float) -> dict:
    """``storage_options`` plus connection and read timeouts for the protocols that take them, unless
    the user set their own: without one, a stalled server holds a read for minutes (aiohttp) or
    forever. Returns a new dict."""
    options = dict(storage_options or {})
    if protocol in ("http", "https"):
        client = dict(options.get("client_kwargs") or {})
        if "timeout" not in client:
            import aiohttp

            client["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        options["client_kwargs"] = client
    elif protocol in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", timeout_s)
        config.setdefault("read_timeout", timeout_s)
        options["config_kwargs"] = config
    return options


class RetryingReader(io.BufferedIOBase):
    """A read-only, seekable file object over a remote object that never raises from ``read``/``seek``.

    ``open_file(size)`` returns a fresh fsspec file object for the object (``size``: its length in
    bytes once known, else None; called again after each transient failure, so a broken connection or a file object left in an unknown state is never
    reused); the position is tracked here, so a retry resumes at the exact byte offset.

    After :meth:`start` succeeds, ``size`` is the object's length in bytes. ``retries`` counts the
    transient failures retried so far; ``failure`` is None, or the message of the failure that made
    ``read`` answer end-of-file early (``"HTTP 503 after 5 attempts"``).
    """

    def __init__(self, open_file: Callable[[int | None], object], policy: RetryPolicy):
        super().__init__()
        self._open_file = open_file
        self.policy = policy
        self.size = 0
        self.position = 0
        self.retries = 0
        self.failure: str | None = None
        self._file = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open the object and learn its size, retrying; raises StorageError (message without a
        location: the caller adds it) when that fails for good."""
        def first_open() -> int:
            self._file = self._open_file(None)
            return int(self._file.size)

        try:
            self.size, used = call_with_retries(first_open, self.policy, "open")
        except StorageError as exc:
            self._drop_file()
            raise StorageError(str(exc).removeprefix("open: ")) from exc.__cause__
        self.retries += used

    def close(self) -> None:
        self._drop_file()
        super().close()

    def _drop_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except Exception:  # a broken connection may fail to close; it is dropped either way
                pass

    # ------------------------------------------------------------------ io.BufferedIOBase
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (no I/O, so nothing can fail here); clamped to ``[0, size]``."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}.get(whence, self.position)
        self.position = min(max(0, base + int(offset)), self.size)
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes from the position (all the rest for None / negative); ``b""`` at the
        end of the object and after a failure that retries could not cure (see ``failure``)."""
        try:
            return self._read(size)
        except BaseException as exc:  # never into native code, whatever happens
            if self.failure is None:
                self.failure = f"read failed: {type(exc).__name__}: {exc}"
            return b""

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _read(self, size: int | None) -> bytes:
        if self.failure is not None or self.position >= self.size:
            return b""
        wanted = self.size - self.position if size is None or size < 0 else min(size, self.size - self.position)
        if wanted == 0:
            return b""
        parts: list[bytes] = []
        got = 0
        failures: list[Failure] = []
        while got < wanted:
            try:
                if self._file is None:
                    self._file = self._open_file(self.size)
                if self._file.tell() != self.position:
                    self._file.seek(self.position)
                data = self._file.read(wanted - got)
                if not data:
                    raise _ShortRead(f"the store ended the object at byte {self.position} of {self.size}")
            except Exception as exc:
                self._drop_file()
                failures.append(failure_of(exc))
                if not failures[-1].transient or len(failures) > self.policy.retries:
                    self.failure = f"{give_up_message(failures)} (reading byte {self.position} of {self.size})"
                    break
                time.sleep(self.policy.delay_s(len(failures) - 1))
                self.retries += 1
                continue
            failures = []  # progress: the next failure starts a fresh series of attempts
            parts.append(data)
            got += len(data)
            self.position += len(data)
        return b"".join(parts)

