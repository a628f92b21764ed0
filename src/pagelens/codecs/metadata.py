"""Document metadata and search filters: what users may store beside a document, checked before
any byte reaches a store.

Metadata is a JSON object of bounded depth, size and key count, whose values Qdrant and JSON can
both hold: strings of valid Unicode, finite numbers, integers within 64 bits, booleans, null, lists
and objects. Keys are short ASCII words (a letter or `_`, then letters, digits, `_`, `-`) so that
each is usable as a filter path (`metadata.<key>` in the store: Qdrant's path syntax refuses
spaces and ignores keys that start with a digit). Anything else is `InvalidInput` naming the field.
(A payload nested a bit over a hundred levels is accepted by Qdrant Edge's write-ahead log but
cannot be replayed from it: the depth limit is what keeps a store openable.)
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pagelens.errors import InvalidInput

MAX_DEPTH = 8  # {"a": {"b": 1}} has depth 2
MAX_BYTES = 8 * 1024  # of the compact JSON; copied into every page's payload, so kept small
MAX_KEYS = 256  # keys in the whole object, nested ones included
MAX_KEY_CHARS = 64
KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
INT64 = (-(2**63), 2**63 - 1)
FilterValue = str | int | bool


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_metadata(text: str | None, *, field: str = "metadata") -> dict[str, Any]:
    """A metadata JSON text (empty or None: `{}`) parsed and checked; `InvalidInput` naming `field`."""
    if not text:
        return {}
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        raise InvalidInput(f"{field} is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidInput(f"{field} is nested deeper than {MAX_DEPTH} levels") from None
    return check_metadata(value, field=field)


def check_metadata(value: object, *, field: str = "metadata") -> dict[str, Any]:
    """`value` if it is a metadata object within every limit; else `InvalidInput` naming the part."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a JSON object, not {type(value).__name__}")
    keys = _check_value(value, field, depth=1)
    if keys > MAX_KEYS:
        raise InvalidInput(f"{field} has {keys} keys; at most {MAX_KEYS}")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_BYTES:
        raise InvalidInput(f"{field} is {size:,} bytes as JSON; at most {MAX_BYTES:,}")
    return value


def check_key(key: object, where: str) -> str:
    """A metadata key usable as a filter path; `InvalidInput` naming `where` otherwise."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS or not KEY_PATTERN.fullmatch(key):
        raise InvalidInput(
            f"{where}: key {_shown(key)} must be 1-{MAX_KEY_CHARS} ASCII letters, digits, '_' or '-', "
            "starting with a letter or '_'"
        )
    return key


def check_filter(filter: dict[str, Any] | None, *, field: str = "filter") -> dict[str, FilterValue]:
    """A search filter `{metadata key: string | integer | boolean}` (equality on each, ANDed), checked."""
    if not filter:
        return {}
    if not isinstance(filter, dict):
        raise InvalidInput(f"{field} must be an object of metadata key to value")
    for key, value in filter.items():
        check_key(key, field)
        if not isinstance(value, FilterValue):
            raise InvalidInput(f"{field}.{key}: value must be a string, integer or boolean")
        _check_value(value, f"{field}.{key}", depth=1)
    return filter


def _check_value(value: object, path: str, *, depth: int) -> int:
    """Check one value (recursively; `depth` counts the objects and lists it is inside of, itself
    included); return how many object keys it holds."""
    if isinstance(value, list | dict) and depth > MAX_DEPTH:
        raise InvalidInput(f"{path} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise InvalidInput(f"{path}: integer {value} does not fit in 64 bits")
        return 0
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{path}: {value} is not a finite number")
        return 0
    if isinstance(value, str):
        _check_text(value, path)
        return 0
    if isinstance(value, list):
        return sum(_check_value(item, f"{path}[{i}]", depth=depth + 1) for i, item in enumerate(value))
    if isinstance(value, dict):
        keys = len(value)
        for key, item in value.items():
            check_key(key, path)
            keys += _check_value(item, f"{path}.{key}", depth=depth + 1)
        return keys
    raise InvalidInput(f"{path}: {type(value).__name__} is not a JSON value")


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{path}: text holds a lone surrogate (not valid Unicode)") from None


def _shown(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."
