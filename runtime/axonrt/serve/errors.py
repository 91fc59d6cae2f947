"""The server's errors, each carrying the HTTP status it is reported with.

Every non-200 response body is `{"error": "<message>"}` (what KServe V2 clients
such as tritonclient expect); the message says what was wrong and what was expected.
"""

from __future__ import annotations

from ..errors import AxonrtError


class ServeError(AxonrtError):
    """An error reported to the client with `status` and a JSON error body."""

    status = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}


class ProtocolError(ServeError, ValueError):
    """A request that does not follow the protocol or does not fit the model (400)."""

    status = 400


class NotFound(ServeError, LookupError):
    """An unknown model, version or route (404)."""

    status = 404


class Unauthorized(ServeError):
    """A missing or wrong bearer token (401)."""

    status = 401


class TooLarge(ServeError):
    """A request body over the size limit (413)."""

    status = 413


class Unavailable(ServeError):
    """A model not ready, a full queue, or a server shutting down (503)."""

    status = 503


class Timeout(ServeError, TimeoutError):
    """A request that waited in the queue or ran longer than its timeout (504)."""

    status = 504


class ConfigError(AxonrtError, ValueError):
    """A malformed model repository, config file or server option."""


__all__ = [
    "ConfigError",
    "NotFound",
    "ProtocolError",
    "ServeError",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]
