"""Document metadata and search filters: what users may store beside a document, checked before
any byte reaches a store.

Metadata is a JSON object of bounded depth, size and key count, whose values Qdrant and JSON can
both hold: strings of valid Unicode, finite numbers, integers within 64 bits, booleans, null, lists
and objects. Keys are short ASCII words (a letter or `_`, then letters, digits, `_`, `-`) so that
each is usable as a filter path (`metadata.<key>` in the store: Qdrant's path syntax refuses
spaces and ignores keys that start with a digit). Anything else is `InvalidInput` naming the field.
(A payload nested a bit over a hundred levels is accepted by Qdrant Edge's write-ahead log but
cannot be replayed from it: the depth limit is what keeps a store openable.)

A metadata change (`merge_metadata`) is a JSON merge patch (RFC 7396): objects merge key by key,
`null` deletes a key, anything else replaces; the result is checked like any metadata.

A search filter maps metadata keys to conditions, all ANDed (`check_filter` returns them checked):

    {"team": "finance"}                      equality: a string, integer or boolean
    {"team": {"$in": ["finance", "legal"]}}  any of a non-empty list of scalars of one type
    {"year": {"$gte": 2020, "$lt": 2024}}    a range of numbers ($gt, $gte, $lt, $lte)
    {"date": {"$gte": "2024-01-01"}}         a range of ISO 8601 dates or datetimes (UTC if no offset)

Values match by type as Qdrant does: 2024 matches neither "2024" nor 2024.5; a range of numbers
matches integers and floats, a range of dates only strings that parse as dates; a list value
matches when one of its items does; a document without the field never matches.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pagelens.errors import InvalidInput

MAX_DEPTH = 8  # {"a": {"b": 1}} has depth 2
MAX_BYTES = 8 * 1024  # of the compact JSON; copied into every page's payload, so kept small
MAX_KEYS = 256  # keys in the whole object, nested ones included
MAX_KEY_CHARS = 64
KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
INT64 = (-(2**63), 2**63 - 1)
FilterValue = str | int | bool
RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = ("$in", *RANGE_OPERATORS)
MAX_IN_VALUES = 1024
# the ISO 8601 forms Qdrant parses in payloads too: a date, optionally a time (T or a space) and an offset
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?")


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


def merge_metadata(stored: dict[str, Any], changes: object, *, field: str = "metadata") -> dict[str, Any]:
    """`stored` with `changes` merged in as a JSON merge patch (`null` deletes a key), checked.
    `InvalidInput` naming `field` when `changes` is no object, or the result breaks a limit."""
    if not isinstance(changes, dict):
        raise InvalidInput(f"{field} must be a JSON object of changes, not {type(changes).__name__}")
    check_metadata(changes, field=field)  # bounded before the merge recurses into it

    def merged(target: object, patch: object) -> object:
        if not isinstance(patch, dict):
            return patch
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merged(result.get(key), value)
        return result

    return check_metadata(merged(stored, changes), field=field)


@dataclass(frozen=True)
class Condition:
    """One checked condition on the value at `key`: a match of any of `any_of` (equality is one
    value, `$in` several, all of one type), or else a range whose `bounds` pair gt/gte/lt/lte with
    numbers, or with UTC datetimes (`dates`)."""

    key: str
    any_of: tuple[FilterValue, ...] = ()
    bounds: tuple[tuple[str, float | datetime], ...] = ()

    @property
    def dates(self) -> bool:
        return any(isinstance(bound, datetime) for _, bound in self.bounds)


def check_filter(filter: object, *, field: str = "filter") -> list[Condition]:
    """A search filter (grammar: the module docstring) as its conditions, ANDed; `InvalidInput`
    naming the field and operator at fault."""
    if filter is None or filter == {}:
        return []
    if not isinstance(filter, dict):
        raise InvalidInput(f"{field} must be an object of metadata key to value or operators")
    conditions = []
    for key, value in filter.items():
        check_key(key, field)
        where = f"{field}.{key}"
        if not isinstance(value, dict):
            conditions.append(Condition(key, (_scalar(value, where),)))
            continue
        unknown = [operator for operator in value if operator not in OPERATORS]
        if unknown or not value:
            said = f"unknown operator(s) {', '.join(map(_shown, unknown))}" if unknown else "no operator"
            raise InvalidInput(f"{where}: {said}; use {', '.join(OPERATORS)}")
        if "$in" in value:
            conditions.append(Condition(key, _in_values(value["$in"], f"{where}.$in")))
        bounds = tuple((op[1:], _bound(value[op], f"{where}.{op}")) for op in RANGE_OPERATORS if op in value)
        if bounds:
            if len({isinstance(bound, datetime) for _, bound in bounds}) > 1:
                raise InvalidInput(f"{where}: range bounds must be all numbers or all dates")
            conditions.append(Condition(key, bounds=bounds))
    return conditions


def _parse_date(text: str) -> datetime | None:
    """`text` as a UTC datetime (no offset: UTC, as Qdrant reads payloads), or None if it is no date."""
    if not ISO_DATE.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _scalar(value: object, where: str) -> FilterValue:
    if not isinstance(value, FilterValue):
        raise InvalidInput(
            f"{where}: value must be a string, integer or boolean (a number that is not an integer: use "
            f"$gte and $lte), or an object of operators ({', '.join(OPERATORS)})"
        )
    _check_value(value, where, depth=1)
    return value


def _in_values(values: object, where: str) -> tuple[FilterValue, ...]:
    if not isinstance(values, list) or not values:
        raise InvalidInput(f"{where} must be a non-empty list of strings, integers or booleans")
    if len(values) > MAX_IN_VALUES:
        raise InvalidInput(f"{where} has {len(values)} values; at most {MAX_IN_VALUES}")
    checked = tuple(_scalar(item, f"{where}[{i}]") for i, item in enumerate(values))
    if len({type(item) for item in checked}) > 1:
        raise InvalidInput(f"{where}: values must all be of one type (strings, integers or booleans)")
    return checked


def _bound(value: object, where: str) -> float | datetime:
    """A range bound: a finite number, or an ISO 8601 date/datetime string as a UTC datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or (isinstance(value, int) and not INT64[0] <= value <= INT64[1]):
            raise InvalidInput(f"{where}: {value} is not a finite number within 64 bits")
        return value
    if isinstance(value, str):
        moment = _parse_date(value)
        if moment is None:
            example = "e.g. 2024-01-31 or 2024-01-31T12:00:00Z"
            raise InvalidInput(f"{where}: {_shown(value)} is not an ISO 8601 date or datetime ({example})")
        return moment
    raise InvalidInput(f"{where}: a range bound must be a number or an ISO 8601 date string")


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
