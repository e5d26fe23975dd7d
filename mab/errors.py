"""Every error `mab` reports, in one place.

An HTTP-facing error carries its status and machine-readable code as class
attributes, so the one function that renders errors needs no table of its own.
"""

from __future__ import annotations


class MabError(Exception):
    """Base of all `mab` errors; never raised itself."""


class StartupError(MabError):
    """The server cannot start: bad config or a malformed catalog."""


class CatalogError(StartupError):
    """A catalog file is malformed; the message names the file, line and problem."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class JournalCorrupt(StartupError):
    """A journal segment or snapshot is damaged somewhere a torn write cannot explain;
    the message names the file and the byte offset."""

    def __init__(self, path: str, offset: int, problem: str) -> None:
        super().__init__(f"{path}: offset {offset}: {problem}")
        self.path = path
        self.offset = offset
        self.problem = problem


class HTTPError(MabError):
    """An error that becomes a JSON response `{"error": {"code", "message"}}`."""

    status: int = 500
    code: str = "internal"
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(HTTPError):
    status = 400
    code = "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class NotFound(HTTPError):
    status = 404
    code = "not_found"


class MethodNotAllowed(HTTPError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(HTTPError):
    """The client did not send its whole body within the read timeout (408)."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(HTTPError):
    status = 413
    code = "payload_too_large"


class TooManyItems(PayloadTooLarge):
    code = "too_many_items"


class TooManyEvents(PayloadTooLarge):
    code = "too_many_events"


class UnsupportedMediaType(HTTPError):
    status = 415
    code = "unsupported_media_type"


class StoreFailed(HTTPError):
    """The feature store answered with an error (502)."""

    status = 502
    code = "store_failed"


class StoreTimeout(HTTPError):
    """The feature store did not answer within the fetch deadline (504)."""

    status = 504
    code = "store_timeout"


class Overloaded(HTTPError):
    """Shed load instead of queueing without bound (503 + Retry-After). `reason` is the
    limit that shed it, a label of mab_shed_total."""

    status = 503
    code = "overloaded"
    retry_after = 1

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotReady(HTTPError):
    status = 503
    code = "not_ready"
    retry_after = 1


class JournalFailed(HTTPError):
    """Feedback could not be made durable (a write or fsync of the journal failed), so
    it is not acknowledged (503 + Retry-After)."""

    status = 503
    code = "journal_failed"
    retry_after = 1


class StoreUnavailable(HTTPError):
    """The shared store (Redis) did not acknowledge a write in time or is unreachable:
    the write may or may not have happened, so a retry must carry its event ids
    (503 + Retry-After)."""

    status = 503
    code = "store_unavailable"
    retry_after = 1


class InternalError(HTTPError):
    status = 500
    code = "internal"


class NativeError(InternalError):
    """The native pipeline refused its input: a bug of ours, answered as a 500."""


class InvalidSpans(NativeError, ValueError):
    """A span, an order entry or k out of range of the buffer it points into."""


class ResponseTooLarge(NativeError):
    """An answer did not fit the buffer sized for it."""


class NativeOutOfMemory(HTTPError):
    """The native pipeline could not allocate its scratch: shed, as for overload."""

    status = 503
    code = "out_of_memory"
    retry_after = 1


class ArmTableFull(HTTPError):
    """Feedback for a new arm when the table holds --max-arms arms (or its id space is
    used up); existing arms still take feedback."""

    status = 507
    code = "arm_table_full"


class NotSupported(HTTPError):
    """The configured store does not do this (feedback or arm state on a read-only
    store such as Vertex)."""

    status = 405
    code = "not_supported_by_store"
