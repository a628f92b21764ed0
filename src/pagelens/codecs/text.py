"""Checking query texts before they reach a model."""

from __future__ import annotations

from pagelens.errors import InvalidInput

DEFAULT_MAX_QUERY_CHARS = 8192


def check_query(text: object, *, max_chars: int = DEFAULT_MAX_QUERY_CHARS) -> str:
    """Return `text` if it is a non-blank string of at most `max_chars` characters, else raise InvalidInput."""
    if not isinstance(text, str):
        raise InvalidInput(f"query must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput("query is empty")
    if len(text) > max_chars:
        raise InvalidInput(f"query has {len(text):,} characters, over the limit of {max_chars:,}")
    return text
