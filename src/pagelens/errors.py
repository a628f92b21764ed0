"""Typed errors raised anywhere in pagelens, each carrying the HTTP status it maps to.

    PagelensError                  base; `http_status` 500
    ├── InvalidInput               400  an input is malformed or over a per-item limit (`index` names it)
    ├── Unauthorized               401  missing or wrong API key
    ├── NotFound                   404  unknown route, collection, document
    ├── MethodNotAllowed           405  a route that exists, called with another method
    ├── RequestTimeout             408  a request body that stopped arriving (PAGELENS_BODY_TIMEOUT_SECONDS)
    ├── Conflict                   409  a collection of that name already exists, or is open in another process
    │   ├── ModelMismatch          409  a collection filled by another model (or output kind) than the loaded one
    │   └── NoSimilarityMap        409  a page with no similarity map (single-vector, pooled, stored before grids)
    ├── PayloadTooLarge            413  request body or input count over a limit (splitting the batch helps)
    ├── UnsupportedMediaType       415  an upload that is no PDF, image or office document (or no LibreOffice)
    ├── UnprocessableDocument      422  a corrupt, encrypted or empty PDF
    ├── Overloaded                 429  admission control refused the work; retry after `retry_after` s
    ├── BackendFailure             500  the model failed on an input (e.g. out of memory on a single item),
    │                                   or the Qdrant server is unreachable or refused a request (names its URL)
    ├── GeneratorNotConfigured     501  /ask or /v1/chat/completions with no generator (names the flags)
    ├── GeneratorUnavailable       502  the answer model's server is unreachable (names its URL, never the key)
    │   └── GeneratorFailed        502  the answer model's server answered an error (its status and message)
    ├── ModelNotReady              503  model not loaded or engine stopped
    ├── GeneratorTimeout           504  the answer model was slower than PAGELENS_LLM_TIMEOUT
    └── ModelLoadError             —    a model could not be resolved or loaded (start-up, not per request)
        └── UnknownModelFamily     —    config matches no supported family

This table (the `http_status` and `error_type` attributes) is the one place where errors meet
status codes and wire types: the API renders from it and the client maps back through
`error_classes()`, so every `error_type` is unique.
"""

from __future__ import annotations


class PagelensError(Exception):
    """Base of every error pagelens raises on purpose."""

    http_status: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index

    def to_dict(self) -> dict[str, object]:
        """The JSON error body: `{"type", "message", "index"?}`."""
        body: dict[str, object] = {"type": self.error_type, "message": self.message}
        if self.index is not None:
            body["index"] = self.index
        return body

    def with_index(self, index: int) -> PagelensError:
        """A copy of this error naming input `index` (the position in the caller's list)."""
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        Exception.__init__(copy, self.message)
        copy.index = index
        return copy

    def __str__(self) -> str:
        return self.message if self.index is None else f"input {self.index}: {self.message}"


class InvalidInput(PagelensError):
    http_status = 400
    error_type = "invalid_input"


class Unauthorized(PagelensError):
    http_status = 401
    error_type = "unauthorized"


class NotFound(PagelensError):
    http_status = 404
    error_type = "not_found"


class MethodNotAllowed(PagelensError):
    http_status = 405
    error_type = "method_not_allowed"


class RequestTimeout(PagelensError):
    http_status = 408
    error_type = "request_timeout"


class Conflict(PagelensError):
    http_status = 409
    error_type = "conflict"


class ModelMismatch(Conflict):
    error_type = "model_mismatch"


class NoSimilarityMap(Conflict):
    """A page whose similarity map cannot be drawn: single-vector or pooled pages, a model without a
    patch grid, a page stored before patch grids were recorded (the message says which)."""

    error_type = "no_similarity_map"


class PayloadTooLarge(PagelensError):
    http_status = 413
    error_type = "payload_too_large"


class UnsupportedMediaType(PagelensError):
    http_status = 415
    error_type = "unsupported_media_type"


class UnprocessableDocument(PagelensError):
    http_status = 422
    error_type = "unprocessable_document"


class Overloaded(PagelensError):
    http_status = 429
    error_type = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendFailure(PagelensError):
    http_status = 500
    error_type = "backend_failure"


class ModelNotReady(PagelensError):
    http_status = 503
    error_type = "model_not_ready"


class GeneratorNotConfigured(PagelensError):
    http_status = 501
    error_type = "llm_not_configured"


class GeneratorUnavailable(PagelensError):
    http_status = 502
    error_type = "llm_unavailable"


class GeneratorFailed(GeneratorUnavailable):
    error_type = "llm_error"


class GeneratorTimeout(PagelensError):
    http_status = 504
    error_type = "llm_timeout"


class ModelLoadError(PagelensError):
    error_type = "model_load_error"


class UnknownModelFamily(ModelLoadError):
    error_type = "unknown_model_family"


def error_classes() -> list[type[PagelensError]]:
    """`PagelensError` and every subclass, parents before children (409 finds Conflict before ModelMismatch)."""
    found: list[type[PagelensError]] = []
    pending = [PagelensError]
    while pending:
        cls = pending.pop(0)
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found
