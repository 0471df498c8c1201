"""Every domain error, under one root. The API maps them to HTTP in one place."""

from __future__ import annotations

import errno
from typing import Any


class ConveyorError(Exception):
    """Root of Conveyor's domain errors. ``status_code`` is the HTTP status the API uses."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(ConveyorError):
    status_code = 400
    code = "invalid_input"


class Unauthenticated(ConveyorError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(ConveyorError):
    status_code = 403
    code = "forbidden"


class NotFound(ConveyorError):
    status_code = 404
    code = "not_found"


class Conflict(ConveyorError):
    """The action is not allowed in the object's current state."""

    status_code = 409
    code = "conflict"


class TooManyRequests(ConveyorError):
    """A per-key quota is used up; ``retry_after`` (seconds) goes out as the Retry-After header."""

    status_code = 429
    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after: int, **detail: Any) -> None:
        super().__init__(message, retry_after=retry_after, **detail)
        self.retry_after = retry_after


class TooLarge(ConveyorError):
    status_code = 413
    code = "too_large"


class StorageFull(ConveyorError):
    """The disk of the data directory or the database is full (or a quota or file-size limit hit)."""

    status_code = 507
    code = "insufficient_storage"


class DatabaseUnavailable(ConveyorError):
    """The connection to the database was lost during the request (restart, failover, admin kill)."""

    status_code = 503
    code = "database_unavailable"


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says storage is full: an ``OSError`` (no space, quota,
    file too large), SQLite's ``SQLITE_FULL`` or PostgreSQL's ``disk_full``."""
    seen: BaseException | None = exc
    for _ in range(5):  # SQLAlchemy -> DBAPI error -> OSError, at most a few levels
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if getattr(seen, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(seen, "sqlstate", None) == _PG_DISK_FULL:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


class InputUnavailable(InvalidInput):
    """An input given by reference (URL, S3 object, collection item) could not be fetched."""

    code = "input_unavailable"


class AddressNotAllowed(InvalidInput):
    """A URL input resolves to a loopback, private, link-local or multicast address."""

    code = "address_not_allowed"


class UnknownPipeline(InvalidInput):
    code = "unknown_pipeline"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class BrokerNotConfigured(ConveyorError):
    """Distributed mode was asked for without ``CONVEYOR_BROKER_URL``."""

    code = "broker_not_configured"
