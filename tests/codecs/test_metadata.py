"""Metadata and filters are checked before any byte reaches a store: bounded depth, size and key
count, 64-bit integers, finite numbers, valid Unicode, keys usable as filter paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pagelens.codecs.metadata import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_KEYS,
    Condition,
    check_filter,
    check_metadata,
    merge_metadata,
    parse_metadata,
)
from pagelens.errors import InvalidInput


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_ordinary_metadata_passes_unchanged():
    metadata = {"year": 2024, "team": "finance", "tags": ["q3", "board"], "score": 0.5, "draft": False,
                "owner": None, "title": "Résumé — 日本語", "big": 2**63 - 1, "small": -(2**63)}  # fmt: skip
    assert check_metadata(metadata) == metadata
    assert parse_metadata(json.dumps(metadata)) == metadata
    assert parse_metadata(None) == {} and parse_metadata("") == {}
    assert check_metadata(nested(MAX_DEPTH)) == nested(MAX_DEPTH)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (json.dumps(nested(MAX_DEPTH + 1)), "nested deeper than 8"),
        (json.dumps(nested(150)), "nested deeper than 8"),
        ("[" * 5000 + "]" * 5000, "nested deeper than 8"),
        ('{"n": 9223372036854775808}', "does not fit in 64 bits"),
        ('{"n": -9223372036854775809}', "does not fit in 64 bits"),
        ('{"n": NaN}', "NaN is not a JSON number"),
        ('{"n": Infinity}', "Infinity is not a JSON number"),
        ('{"n": -Infinity}', "-Infinity is not a JSON number"),
        ('{"n": 1e400}', "metadata.n: inf is not a finite number"),
        ('{"s": "\\ud800"}', "metadata.s: text holds a lone surrogate"),
        ('{"\\udfff": 1}', "key '\\udfff'"),
        ('{"my key": 1}', "key 'my key'"),
        ('{"a.b": 1}', "key 'a.b'"),
        ('{"9lives": 1}', "key '9lives'"),
        ('{"": 1}', "key ''"),
        ('{"ok": {"bad key": 1}}', "metadata.ok: key 'bad key'"),
        ('["a list"]', "must be a JSON object, not list"),
        ("{not json", "metadata is not valid JSON"),
        (json.dumps({"blob": "x" * MAX_BYTES}), "bytes as JSON; at most"),
        (json.dumps({f"k{i}": {"v": 1} for i in range(MAX_KEYS // 2 + 1)}), "keys; at most"),
    ],
)
def test_each_bad_metadata_is_a_400_naming_what_is_wrong(text, says):
    with pytest.raises(InvalidInput) as refused:
        parse_metadata(text)
    assert says in refused.value.message and refused.value.http_status == 400


def test_filters_take_valid_keys_and_scalar_values():
    assert check_filter({"year": 2024, "team": "finance", "draft": False}) == [
        Condition("year", (2024,)), Condition("team", ("finance",)), Condition("draft", (False,))
    ]  # fmt: skip
    assert check_filter(None) == [] and check_filter({}) == []
    for bad, says in [({"a.b": 1}, "key 'a.b'"), ({"x": [1]}, "string, integer or boolean"),
                      ({"x": 2**70}, "64 bits"), ({"x": "\ud800"}, "surrogate"), ({"": 1}, "key ''")]:  # fmt: skip
        with pytest.raises(InvalidInput, match="filter") as refused:
            check_filter(bad)
        assert says in refused.value.message


def test_filter_operators_are_checked_and_dates_read_as_utc():
    dates = {"$gt": "2024-01-31T12:00:00+02:00", "$lte": "2024-02-01"}
    team, year, date = check_filter({"team": {"$in": ["a", "b"]}, "year": {"$gte": 2020, "$lt": 2024.5}, "date": dates})
    assert team == Condition("team", ("a", "b")) and not team.dates
    assert year == Condition("year", bounds=(("gte", 2020), ("lt", 2024.5))) and not year.dates
    assert date.dates and date.bounds == (
        ("gt", datetime(2024, 1, 31, 10, tzinfo=UTC)), ("lte", datetime(2024, 2, 1, tzinfo=UTC))
    )  # fmt: skip
    naive, spaced = check_filter({"a": {"$gte": "2024-01-31T12:00"}, "b": {"$gte": "2024-01-31 12:00:00.5Z"}})
    assert naive.bounds[0][1] == datetime(2024, 1, 31, 12, tzinfo=UTC), "no offset: UTC, as Qdrant reads payloads"
    assert spaced.bounds[0][1] == datetime(2024, 1, 31, 12, 0, 0, 500_000, tzinfo=UTC)
    both = check_filter({"n": {"$in": [1, 2], "$gt": 1}})
    assert both == [Condition("n", (1, 2)), Condition("n", bounds=(("gt", 1),))]
    assert check_filter({"b": {"$in": [True, False]}}) == [Condition("b", (True, False))]


@pytest.mark.parametrize(
    ("filter", "says"),
    [
        ({"year": {"$eq": 2024}}, "filter.year: unknown operator(s) '$eq'; use $in, $gt, $gte, $lt, $lte"),
        ({"year": {"$gte": 1, "$regex": "x"}}, "unknown operator(s) '$regex'"),
        ({"year": {}}, "filter.year: no operator"),
        ({"team": {"$in": []}}, "filter.team.$in must be a non-empty list"),
        ({"team": {"$in": "finance"}}, "filter.team.$in must be a non-empty list"),
        ({"team": {"$in": ["a", 1]}}, "filter.team.$in: values must all be of one type"),
        ({"team": {"$in": [1, True]}}, "filter.team.$in: values must all be of one type"),
        ({"team": {"$in": [1.5]}}, "filter.team.$in[0]: value must be a string, integer or boolean"),
        ({"team": {"$in": [["a"]]}}, "filter.team.$in[0]: value must be"),
        ({"team": {"$in": list(range(1025))}}, "at most 1024"),
        ({"date": {"$gte": "2024-13-01"}}, "filter.date.$gte: '2024-13-01' is not an ISO 8601 date"),
        ({"date": {"$lt": "yesterday"}}, "filter.date.$lt: 'yesterday' is not an ISO 8601 date"),
        ({"date": {"$lt": "2024-02-30"}}, "filter.date.$lt: '2024-02-30' is not an ISO 8601 date"),
        ({"date": {"$lt": "2024-W03"}}, "is not an ISO 8601 date"),  # ISO, but not a form Qdrant reads
        ({"date": {"$gte": "2024-01-01", "$lt": 5}}, "filter.date: range bounds must be all numbers or all dates"),
        ({"n": {"$gt": True}}, "filter.n.$gt: a range bound must be a number or an ISO 8601 date string"),
        ({"n": {"$gt": None}}, "filter.n.$gt: a range bound must be"),
        ({"n": {"$gt": float("nan")}}, "filter.n.$gt: nan is not a finite number"),
        ({"n": {"$gt": 2**64}}, "not a finite number within 64 bits"),
        ({"n": 1.5}, "filter.n: value must be a string, integer or boolean (a number that is not an integer"),
        ({"n": None}, "filter.n: value must be"),
        ({"a b": {"$in": [1]}}, "filter: key 'a b'"),
        ({"$in": [1]}, "filter: key '$in'"),
    ],
)
def test_each_bad_filter_is_a_400_naming_the_field(filter, says):
    with pytest.raises(InvalidInput) as refused:
        check_filter(filter)
    assert says in refused.value.message and refused.value.http_status == 400
    with pytest.raises(InvalidInput, match="must be an object"):
        check_filter(["a"])


def test_metadata_changes_merge_as_a_json_merge_patch():
    stored = {"team": "x", "year": 2020, "nested": {"a": 1, "b": 2}, "tags": ["q1"]}
    changes = {"year": None, "nested": {"a": None, "c": 3}, "tags": ["q2"], "new": True, "gone": None}
    assert merge_metadata(stored, changes) == {"team": "x", "nested": {"b": 2, "c": 3}, "tags": ["q2"], "new": True}
    assert stored["year"] == 2020, "the stored metadata is left as it was"
    assert merge_metadata(stored, {}) == stored
    for changes, says in [
        (["a"], "metadata must be a JSON object of changes, not list"),
        ("x", "metadata must be a JSON object of changes, not str"),
        ({"a b": None}, "key 'a b'"),
        ({"big": "x" * MAX_BYTES}, "bytes as JSON; at most"),
        ({"n": 2**64}, "does not fit in 64 bits"),
        (nested(MAX_DEPTH + 1), "nested deeper than 8"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            merge_metadata(stored, changes)
        assert says in refused.value.message
    near_full = {f"k{i}": i for i in range(MAX_KEYS)}
    with pytest.raises(InvalidInput, match="keys; at most"):
        merge_metadata(near_full, {"one_more": 1})  # the merged result is what is checked


# ---------------------------------------------------------------- properties (hypothesis)
import contextlib  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEYS = st.text(min_size=0, max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_LIKE = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=40
)
VALID_KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,11}", fullmatch=True)
UNICODE_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
VALID_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | UNICODE_TEXT
)  # fmt: skip
VALID_VALUES = st.recursive(
    VALID_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(VALID_KEYS, inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
VALID = st.dictionaries(VALID_KEYS, VALID_VALUES, max_size=6)


def same_json(a, b) -> bool:
    """Equal, floats to within a unit in the last place (Qdrant's JSON may round the last digit)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-15, abs_tol=0.0) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@given(JSON_LIKE)
def test_any_value_is_accepted_or_refused_with_a_400_never_anything_else(value):
    try:
        checked = check_metadata(value)
    except InvalidInput as error:
        assert error.http_status == 400 and error.message
    else:
        assert checked is value
        json.dumps(checked, allow_nan=False).encode("utf-8")  # JSON can carry it, in UTF-8


@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused_with_a_400(text):
    with contextlib.suppress(InvalidInput):
        parse_metadata(text)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    from pagelens.index.edge_store import open_edge_store

    store = open_edge_store(tmp_path_factory.mktemp("metadata") / "store")
    yield store, itertools.count()
    store.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(VALID)
def test_whatever_is_accepted_is_stored_and_read_back_by_qdrant_edge(shared_store, metadata):
    import numpy as np

    store, numbers = shared_store
    number = next(numbers)
    page = np.random.default_rng(number).standard_normal((1, 128)).astype(np.float32)
    page /= np.linalg.norm(page)
    store.add_document(f"d{number}", [page], name="n", metadata=check_metadata(metadata))
    (hit,) = store.search(page, k=1)  # the page scores itself highest
    assert hit.document_id == f"d{number}" and same_json(hit.metadata, metadata)
