"""A fault-injecting HTTP file server on 127.0.0.1 for storage-fault tests (not a test module).

It serves in-memory objects with HEAD and single-range GET (what fsspec's HTTPFileSystem uses) and
fails on purpose, drawn from a seeded generator, and counts what it did:

- ``fail_fraction``: that fraction of requests answers 503 Service Unavailable;
- ``reset_fraction``: that fraction of the other GETs sends its headers and half its body, then resets
  the connection (TCP RST), so the client sees a cut mid-body; with ``reset_first`` the first GET of
  every object is cut that way too, so every object meets at least one;
- ``broken``: objects that always answer 503 (an outage that outlasts every retry);
- ``stalled``: objects whose GET sends the first bytes and then nothing more, until the client gives
  up or ``stall_s`` passes (bounded, so a test cannot hang on the server);
- ``poisoned``: objects whose GET kills the reading process (SIGKILL, found by its socket), like a
  file that crashes the decoder or exhausts memory every time it is read;
- a name that is not served answers 404.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultyServer:
    """``with FaultyServer(objects, fail_fraction=0.5) as server: server.url("a.mp4")``."""

    def __init__(self, objects: dict[str, bytes], fail_fraction: float = 0.0, reset_fraction: float = 0.0,
                 broken: frozenset[str] = frozenset(), stalled: frozenset[str] = frozenset(),
                 poisoned: frozenset[str] = frozenset(), stall_s: float = 30.0, seed: int = 0,
                 reset_first: bool = False):
        self.objects = dict(objects)
        self.fail_fraction = fail_fraction
        self.reset_fraction = reset_fraction
        self.reset_first = reset_first
        self._got: set[str] = set()
        self._random = random.Random(seed)
        self.broken = set(broken)
        self.stalled = set(stalled)
        self.poisoned = set(poisoned)
        self.killed: list[int] = []
        self.stall_s = stall_s
        self.counts: Counter = Counter()  # ("503" | "reset" | "stall" | "kill" | "ok" | "404", name) -> requests
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def total(self, kind: str) -> int:
        return sum(n for (k, _), n in self.counts.items() if k == kind)

    def __enter__(self) -> "FaultyServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # ends stalled responses
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _decide(self, name: str, method: str) -> str:
        with self._lock:
            if name not in self.objects:
                kind = "404"
            elif name in self.broken or self._random.random() < self.fail_fraction:
                kind = "503"
            elif method == "GET" and name in self.stalled:
                kind = "stall"
            elif method == "GET" and name in self.poisoned:
                kind = "kill"
            elif method == "GET" and ((self.reset_first and name not in self._got)
                                      or self._random.random() < self.reset_fraction):
                kind = "reset"
            else:
                kind = "ok"
            if method == "GET":
                self._got.add(name)
            self.counts[(kind, name)] += 1
            return kind


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """Clients that give up (a timeout) reset their connections: expected here, not news."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _handler(server: FaultyServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet test output
            pass

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_GET(self) -> None:
            self._serve("GET")

        def _serve(self, method: str) -> None:
            name = self.path.lstrip("/").split("?", 1)[0]
            kind = server._decide(name, method)
            if kind == "kill":
                pid = kill_client(self.connection)
                if pid is not None:
                    server.killed.append(pid)
                self.close_connection = True
                return
            if kind in ("404", "503"):
                body = b"not found" if kind == "404" else b"slow down"
                self.send_response(int(kind))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method == "GET":
                    self.wfile.write(body)
                return
            data = server.objects[name]
            start, end = 0, len(data)
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                first, _, last = ranged[len("bytes="):].partition("-")
                start = int(first or 0)
                end = min(len(data), int(last) + 1) if last else len(data)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if method == "HEAD":
                return
            body = data[start:end]
            if kind == "reset":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                # SO_LINGER 0: close() sends a TCP RST, a connection reset mid-body.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if kind == "stall":
                self.wfile.write(body[:1024])
                self.wfile.flush()
                server._stop.wait(server.stall_s)
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


def kill_client(connection: socket.socket) -> int | None:
    """SIGKILL the local process at the other end of ``connection`` (a worker reading a poisoned
    object): its port is looked up in /proc/net/tcp, the socket's inode in /proc/*/fd. Returns the
    PID killed, or None when it is not found or is this very process."""
    import os
    import signal

    port = connection.getpeername()[1]
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                inode = fields[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # gone, or not ours
            continue
        if target in links:
            if int(pid) == os.getpid():
                return None
            os.kill(int(pid), signal.SIGKILL)
            return int(pid)
    return None


class FaultyProxy:
    """A reverse proxy on 127.0.0.1 in front of an HTTP server (the tests' moto S3) that answers a seeded
    ``fail_fraction`` of requests with S3's ``503 SlowDown`` instead of forwarding them, and cuts a
    ``reset_fraction`` of the forwarded responses mid-body. ``url`` is its endpoint."""

    def __init__(self, upstream: str, fail_fraction: float = 0.0, reset_fraction: float = 0.0, seed: int = 0):
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.fail_fraction = fail_fraction
        self.reset_fraction = reset_fraction
        self.counts: Counter = Counter()  # ("503" | "reset" | "ok", method) -> requests
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _proxy_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _decide(self, method: str) -> str:
        with self._lock:
            draw = self._random.random()
            kind = "503" if draw < self.fail_fraction else (
                "reset" if draw < self.fail_fraction + self.reset_fraction else "ok")
            self.counts[(kind, method)] += 1
            return kind

    def __enter__(self) -> "FaultyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


_SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
              b'<Message>Please reduce your request rate.</Message></Error>')


def _proxy_handler(proxy: FaultyProxy):
    import http.client

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            kind = proxy._decide(self.command)
            if kind == "503":
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(_SLOW_DOWN)
                return
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(key, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if kind == "reset" and len(data) > 1:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    return Handler
