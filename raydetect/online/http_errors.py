"""Exceptions the HTTP layer answers itself: a refused request (4xx), an unavailable detector (503)."""

from __future__ import annotations


class RequestRejected(Exception):
    """A request refused with a 4xx status and a message for the client.

    The HTTP layer answers it as ``{"error": message}`` with ``status``; nothing else is
    lost, and the server carries on.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ServiceUnavailable(Exception):
    """The detector cannot take the request right now (no replica, overloaded, restarting): 503."""
