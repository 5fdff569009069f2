"""Request bodies: bearer token, media type, size limit, and the file part of a multipart form.

A body is read in chunks and refused with 413 the moment it passes the limit (or at once,
when its Content-Length already says so), so an oversize upload never sits whole in memory.
"""

from __future__ import annotations

import hmac
from typing import AsyncIterator

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from raydetect.online.http_errors import RequestRejected

MULTIPART = "multipart/form-data"


def check_bearer_token(authorization: str | None, token: str | None) -> None:
    """Refuse with 401 unless ``token`` is None (no token configured) or the request's
    ``Authorization: Bearer <token>`` header carries it (compared in constant time)."""
    if token is None:
        return
    challenge = {"WWW-Authenticate": 'Bearer realm="raydetect"'}
    if not authorization:
        raise RequestRejected(401, "missing bearer token: send 'Authorization: Bearer <token>'", challenge)
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise RequestRejected(401, "malformed Authorization header: expected 'Bearer <token>'", challenge)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestRejected(401, "invalid bearer token", challenge)


def media_type(content_type: str | None) -> str | None:
    """``"image/jpeg"`` from ``"Image/JPEG; charset=x"``; None when the header is absent or empty."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def check_declared_length(headers: Headers, limit: int, what: str) -> None:
    """413 at once when Content-Length announces more than ``limit`` bytes; 400 when it is garbage."""
    declared = headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise RequestRejected(400, f"Content-Length is not a number: {declared!r}") from None
    if size > limit:
        raise RequestRejected(413, _too_large(what, limit, f"{size} bytes"))


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    check_declared_length(request.headers, limit, what)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRejected(413, _too_large(what, limit, "more"))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(
    request: Request, *, limit: int, field: str, accepted_types: dict[str, object], what: str
) -> tuple[bytes, str]:
    """The uploaded bytes and their media type, from a raw body or a multipart form field.

    Args:
        request: the incoming request.
        limit: most bytes accepted for the whole body.
        field: name of the multipart field holding the file (e.g. ``"image"``).
        accepted_types: media types accepted for the raw body or the field's part.
        what: noun used in messages (``"image"``, ``"video"``).

    Raises:
        RequestRejected: 415 for a media type not accepted, 413 over the limit, 400 for a
            malformed form or an empty body, 422 for a form without ``field``.
    """
    declared = media_type(request.headers.get("content-type"))
    accepted = ", ".join([t for t in accepted_types if t != "application/octet-stream"] + [MULTIPART])
    if declared is None:
        raise RequestRejected(415, f"missing Content-Type: send the {what} as one of {accepted}")
    if declared != MULTIPART and declared not in accepted_types:
        raise RequestRejected(415, f"unsupported Content-Type {declared!r}: send the {what} as one of {accepted}")
    body = await read_body(request, limit, what)
    if declared == MULTIPART:
        body, declared = await _form_file(request.headers, body, field, accepted_types, accepted, what)
    if not body:
        raise RequestRejected(400, f"empty {what}")
    return body, declared


async def _form_file(
    headers: Headers, body: bytes, field: str, accepted_types: dict[str, object], accepted: str, what: str
) -> tuple[bytes, str]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    # The body is already bounded by read_body; one file and a few small fields is all a
    # client needs to send.
    parser = MultiPartParser(headers, stream(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise RequestRejected(400, f"malformed multipart form: {exc.message}") from None
    except Exception as exc:  # python-multipart raises its own errors on broken framing
        raise RequestRejected(400, f"malformed multipart form: {exc}") from None
    try:
        part = form.get(field)
        if part is None:
            raise RequestRejected(422, f"multipart form has no field {field!r}")
        if not isinstance(part, UploadFile):
            raise RequestRejected(422, f"form field {field!r} must be a file upload")
        part_type = media_type(part.content_type) or "application/octet-stream"
        if part_type not in accepted_types:
            raise RequestRejected(
                415, f"unsupported Content-Type {part_type!r} for field {field!r}: send one of {accepted}"
            )
        return await part.read(), part_type
    finally:
        await form.close()


def _too_large(what: str, limit: int, size: str) -> str:
    return f"{what} body too large ({size}); the limit is {limit} bytes ({limit / 2**20:g} MiB)"
