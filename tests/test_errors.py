"""The error table: one class per wire type, walked parents first."""

from __future__ import annotations

from pagelens import errors
from pagelens.errors import Conflict, ModelMismatch, PagelensError, error_classes

# The wire contract clients rely on (status, type); a change here is a breaking API change.
WIRE = {
    "internal_error": 500,
    "invalid_input": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "conflict": 409,
    "model_mismatch": 409,
    "no_similarity_map": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "unprocessable_document": 422,
    "overloaded": 429,
    "backend_failure": 500,
    "model_not_ready": 503,
    "llm_not_configured": 501,
    "llm_unavailable": 502,
    "llm_error": 502,
    "llm_timeout": 504,
    "model_load_error": 500,
    "unknown_model_family": 500,
}


def test_every_error_class_is_walked_once_with_a_unique_type():
    classes = error_classes()
    declared = {cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, PagelensError)}
    assert set(classes) == declared and len(classes) == len(declared)
    assert {cls.error_type: cls.http_status for cls in classes} == WIRE
    assert len({cls.error_type for cls in classes}) == len(classes)


def test_parents_come_before_children():
    classes = error_classes()
    assert classes[0] is PagelensError
    for cls in classes:
        for parent in cls.__mro__[1:]:
            if parent in classes:
                assert classes.index(parent) < classes.index(cls), (parent, cls)
    assert classes.index(Conflict) < classes.index(ModelMismatch)
