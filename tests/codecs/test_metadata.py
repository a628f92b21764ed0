"""Metadata and filters are checked before any byte reaches a store: bounded depth, size and key
count, 64-bit integers, finite numbers, valid Unicode, keys usable as filter paths."""

from __future__ import annotations

import json

import pytest

from pagelens.codecs.metadata import MAX_BYTES, MAX_DEPTH, MAX_KEYS, check_filter, check_metadata, parse_metadata
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
    assert check_filter({"year": 2024, "team": "finance", "draft": False}) == {"year": 2024, "team": "finance",
                                                                             "draft": False}  # fmt: skip
    assert check_filter(None) == {}
    for bad, says in [({"a.b": 1}, "key 'a.b'"), ({"x": [1]}, "string, integer or boolean"),
                      ({"x": 2**70}, "64 bits"), ({"x": "\ud800"}, "surrogate"), ({"": 1}, "key ''")]:  # fmt: skip
        with pytest.raises(InvalidInput, match="filter") as refused:
            check_filter(bad)
        assert says in refused.value.message


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
