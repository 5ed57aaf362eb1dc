"""The metadata query language: whitelist parsing and vectorized evaluation over a store."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from hf_mixture.errors import HFMixtureError
from hf_mixture.formats.token_store import TokenStore, TokenStoreWriter
from hf_mixture.mixture.query import parse_query, select, store_fields

TABLE = pa.table({
    "cluster_id": [0, 1, 2, 3, 7, 7],
    "source": ["code", "docs", "code", "dict", "docs", None],
    "quality": [0.9, 0.1, 0.5, None, 0.75, 0.3],
    "is_code": [True, False, True, False, False, False],
})


def rows(query, table=TABLE):
    return np.flatnonzero(parse_query(query).mask(table)).tolist()


@pytest.mark.parametrize("query, expected", [
    ("cluster_id == 7", [4, 5]),
    ("cluster_id != 7", [0, 1, 2, 3]),
    ("cluster_id < 2", [0, 1]),
    ("cluster_id <= 2", [0, 1, 2]),
    ("cluster_id > 3", [4, 5]),
    ("cluster_id >= 3", [3, 4, 5]),
    ("cluster_id in [3, 7]", [3, 4, 5]),
    ("cluster_id in (0, 2)", [0, 2]),
    ("cluster_id not in [3, 7]", [0, 1, 2]),
    ("source == 'code'", [0, 2]),
    ('source in ["docs", "dict"]', [1, 3, 4]),
    ("source == 'code' and quality >= 0.5", [0, 2]),
    ("source == 'code' or cluster_id == 3", [0, 2, 3]),
    ("not source == 'code'", [1, 3, 4]),          # the null source (row 5) stays out
    ("not (source == 'code' or source == 'docs')", [3]),
    ("(cluster_id in [7] or cluster_id == 0) and not quality < 0.5", [0, 4]),
    ("0.2 <= quality < 0.8", [2, 4, 5]),           # a chain is an AND, as in Python
    ("0.5 <= quality", [0, 2, 4]),                 # constant on the left is flipped
    ("3 > cluster_id", [0, 1, 2]),
    ("quality > -1", [0, 1, 2, 4, 5]),             # negative constants; null quality out
    ("cluster_id == 7.0", [4, 5]),
    ("is_code", [0, 2]),
    ("not is_code", [1, 3, 4, 5]),
    ("is_code == True", [0, 2]),
    ("cluster_id in []", []),
    ({"cluster_id": [3, 7], "source": "docs"}, [4]),
    ({"source": "code"}, [0, 2]),
])
def test_queries_select_the_expected_rows(query, expected):
    assert rows(query) == expected


def test_not_in_and_negation_never_select_missing_values():
    # Three-valued logic: a document without a source is neither 'code' nor 'not code'.
    assert 5 not in rows("source not in ['code']")
    assert 3 not in rows("not quality > 0.5")


def test_fields_are_collected():
    q = parse_query("cluster_id in [1] and (source == 'x' or not quality < 1)")
    assert q.fields == {"cluster_id", "source", "quality"}


@pytest.mark.parametrize("query, names", [
    ("__import__('os')", "function calls"),
    ("__import__('os').system('true')", "function calls"),
    ("source.upper() == 'CODE'", "function calls"),
    ("x.__class__ == 1", "attribute access"),
    ("source[0] == 'c'", "subscripts"),
    ("cluster_id + 1 == 3", "arithmetic"),
    ("(lambda: 1) == 1", "lambdas"),
    ("[c for c in 'ab'] == 1", "comprehensions"),
    ("(x := 1) == 1", "assignments"),
    ("cluster_id == (1 if True else 2)", "conditional expressions"),
    ("cluster_id in [len('a')]", "function calls"),
    ("source == open('/etc/passwd').read()", "function calls"),
])
def test_code_is_refused_not_executed(query, names):
    with pytest.raises(HFMixtureError) as err:
        parse_query(query)
    assert names in str(err.value)
    assert repr(query) in str(err.value)  # the message names the query


@pytest.mark.parametrize("query, fragment", [
    ("cluster_id ==", "not valid syntax"),
    ("cluster_id = 3", "not valid syntax"),
    ("import os", "not valid syntax"),
    ("cluster_id is 3", "operator 'Is'"),
    ("cluster_id == None", "constant None"),
    ("cluster_id == quality", "compares two fields"),
    ("1 == 1", "compares two constants"),
    ("source == code", "quote strings"),
    ("3 in cluster_id", "left side of 'in'"),
    ("cluster_id in 3", "right side of 'in'"),
    ("True", "where a condition belongs"),
    ("quality < 1e999", "non-finite"),
    ("   ", "empty"),
])
def test_bad_queries_are_one_clear_error(query, fragment):
    with pytest.raises(HFMixtureError, match=fragment):
        parse_query(query)


def test_bad_mapping_queries():
    with pytest.raises(HFMixtureError, match="empty"):
        parse_query({})
    with pytest.raises(HFMixtureError, match="'quality' is compared with NaN"):
        parse_query({"quality": float("nan")})
    with pytest.raises(HFMixtureError, match="'source' is compared with"):
        parse_query({"source": {"nested": 1}})
    with pytest.raises(HFMixtureError, match="must be a string or a mapping"):
        parse_query(3)


def test_type_mismatch_names_the_field():
    with pytest.raises(HFMixtureError, match=r"field 'quality' holds double .*quality > 'high'"):
        parse_query("quality > 'high'").mask(TABLE)
    with pytest.raises(HFMixtureError, match="field 'source' holds string"):
        parse_query("source in [1, 2]").mask(TABLE)
    with pytest.raises(HFMixtureError, match="'cluster_id' as a condition"):
        parse_query("cluster_id").mask(TABLE)


# -- over a token store -------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    """Three store components; cluster_2's metadata has no 'quality' column."""
    path = tmp_path / "store"
    with TokenStoreWriter(path, vocab_size=50, eos_token_id=0, tokenizer_name="toy") as w:
        for k in range(3):
            for i in range(4):
                meta = {"cluster_id": k, "source": ["code", "prose"][i % 2]}
                if k < 2:
                    meta["quality"] = i / 4
                w.add(f"cluster_{k}", "train", np.arange(1, 2 + i + k), meta)
            w.add(f"cluster_{k}", "validation", [1, 2], {"cluster_id": k, "source": "code"})
    return TokenStore(path)


def test_select_spans_store_components(store):
    hits = select(store, "source == 'code' and cluster_id != 1")
    assert list(hits) == ["cluster_0", "cluster_2"]
    assert hits["cluster_0"].tolist() == [0, 2]
    assert hits["cluster_2"].dtype == np.int64


def test_select_field_missing_in_one_component_matches_nothing_there(store):
    hits = select(store, "quality >= 0.5")
    assert {k: v.tolist() for k, v in hits.items()} == {"cluster_0": [2, 3], "cluster_1": [2, 3]}
    # ... nor does its negation.
    assert "cluster_2" not in select(store, "not quality >= 0.5")


def test_select_validation_split(store):
    assert {k: v.tolist() for k, v in select(store, "cluster_id >= 1", "validation").items()} \
        == {"cluster_1": [0], "cluster_2": [0]}


def test_unknown_field_names_it_and_the_known_ones(store):
    assert store_fields(store) == ["cluster_id", "quality", "source"]
    with pytest.raises(HFMixtureError) as err:
        select(store, "language == 'en' and cluster_id == 1")
    message = str(err.value)
    assert "'language'" in message and "cluster_id, quality, source" in message
    assert "\n" not in message


def test_nothing_matching_is_an_empty_selection(store):
    assert select(store, "cluster_id == 99") == {}
