"""Property tests: every reader of a file a user can hand us answers malformed input with one
HFMixtureError sentence naming the file (and the field), never another exception.

Each reader gets a valid document, and hypothesis mutates it: a value anywhere replaced by
any JSON value, a key removed, a list emptied -- or, for the text formats, arbitrary text.
Readers: clusters.json, the token store manifest, mixture YAML, the query language, recipe
YAML, proxy run metrics.json.  Examples are few per reader (the suite stays fast).
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_mixture.errors import HFMixtureError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_cpu.yaml"
SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside ``doc`` (the root included)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutations(draw, base: Any) -> Any:
    """``base`` with one to three values replaced by arbitrary JSON or removed."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


def _one_sentence(err: HFMixtureError, *names: str) -> None:
    text = str(err)
    assert text and "\n" not in text, text
    assert any(n in text for n in names), (names, text)


def _reads_or_refuses(read, *names: str) -> None:
    try:
        read()
    except HFMixtureError as err:
        _one_sentence(err, *names)


# -- clusters.json -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> Path:
    import datasets

    from hf_mixture.formats import write_clustered_corpus

    out = tmp_path_factory.mktemp("clustered") / "c"
    write_clustered_corpus(datasets.Dataset.from_dict(
        {"tokens": [[1, 2, 3], [4, 5], [6]] * 2, "cluster_id": [0, 0, 1, 1, 2, 2],
         "source": ["a", "b"] * 3}), out)
    return out


@SETTINGS
@given(data=st.data())
def test_clusters_json(clustered, data):
    from hf_mixture.formats import ClusteredCorpus

    base = json.loads((clustered / "clusters.json").read_text())
    doc = data.draw(mutations(base))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c"
        shutil.copytree(clustered, path)
        (path / "clusters.json").write_text(json.dumps(doc))

        def read():
            corpus = ClusteredCorpus(path)
            corpus.validate()
            for k in corpus.cluster_ids:
                corpus.num_docs(k), corpus.num_tokens(k)
            assert corpus.tokenizer_info is None or isinstance(corpus.tokenizer_info, dict)
            assert isinstance(corpus.clusters, dict | list)

        _reads_or_refuses(read, "clusters.json", "cluster_")


# -- the token store manifest ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from hf_mixture.formats import TokenStoreWriter

    path = tmp_path_factory.mktemp("store") / "s"
    rng = np.random.default_rng(0)
    with TokenStoreWriter(path, vocab_size=300, eos_token_id=0, tokenizer_name="t") as w:
        for c in (0, 1):
            for _ in range(4):
                w.add(f"cluster_{c}", "train", rng.integers(1, 300, 9), {"cluster_id": c})
            w.add(f"cluster_{c}", "validation", rng.integers(1, 300, 5), {"cluster_id": c})
            w.set_info(f"cluster_{c}", cluster_id=c, description=f"cluster {c}")
    return path


@SETTINGS
@given(data=st.data())
def test_store_manifest(store, data):
    from hf_mixture.formats import TokenStore
    from hf_mixture.mixture import Mixture

    base = json.loads((store / "manifest.json").read_text())
    doc = data.draw(mutations(base))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        shutil.copytree(store, path)
        (path / "manifest.json").write_text(json.dumps(doc))

        def read():
            s = TokenStore(path)
            for c in s.components:
                s.num_docs(c), s.num_tokens(c), s.info(c), s.document(c, 0)
            s.fingerprint, repr(s)
            Mixture.from_store(s, "natural").resolve(s)

        _reads_or_refuses(read, "manifest.json", "Token store")


# -- mixture YAML -----------------------------------------------------------------------------------
_MIXTURE = {"name": "m", "seed": 1, "temperature": 1.0, "components": [
    {"name": "a", "query": "cluster_id == 0", "weight": 2, "max_epochs": 4},
    {"name": "b", "query": {"cluster_id": [1]}, "weight": 1, "description": "b"}],
    "stages": [{"start": 0.5, "weights": {"a": 1, "b": 1}}]}


@SETTINGS
@given(doc=mutations(_MIXTURE))
def test_mixture_yaml(tmp_path, store, doc):
    from hf_mixture.formats import TokenStore
    from hf_mixture.mixture import Mixture

    path = tmp_path / "mixture.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))

    def read():
        m = Mixture.load(path)
        m.weights(), m.fingerprint, m.to_dict()
        m.resolve(TokenStore(store))

    _reads_or_refuses(read, "mixture.yaml", "Query", "Component", "token store")


@SETTINGS
@given(text=st.text(max_size=80))
def test_mixture_yaml_text(tmp_path, text):
    from hf_mixture.mixture import Mixture

    path = tmp_path / "mixture.yaml"
    path.write_text(text, encoding="utf-8")
    _reads_or_refuses(lambda: Mixture.load(path), "mixture.yaml")


# -- the query language -------------------------------------------------------------------------------
_TOKENS = ["cluster_id", "source", "quality", "missing", "==", "!=", "<", "<=", ">", ">=", "in",
           "not in", "and", "or", "not", "(", ")", "[", "]", ",", "0", "1", "2.5", "-1", "'a'",
           "\"b\"", "True", "None", "1e400", "x.y", "f(1)", "+", "**", "lambda", ":", "[1, 2]"]
_TABLE = pa.table({"cluster_id": [0, 1, 2, None], "source": ["a", "b", None, "a"],
                   "quality": [0.1, 0.9, 0.5, None], "flag": [True, False, None, True]})


@SETTINGS
@given(st.one_of(
    st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=9).map(" ".join),
    st.text(max_size=40),
    st.dictionaries(st.sampled_from(["cluster_id", "source", "quality", "missing", ""]),
                    json_values, max_size=3)))
def test_query_language(query):
    from hf_mixture.mixture.query import parse_query

    def read():
        mask = parse_query(query).mask(_TABLE)
        assert mask.dtype == bool and mask.shape == (_TABLE.num_rows,)

    _reads_or_refuses(read, "Query", "query")


# -- recipe YAML ----------------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_recipe_yaml(tmp_path, data):
    from hf_mixture.train import load_train_config

    base = yaml.safe_load(RECIPE.read_text())
    doc = data.draw(mutations(base))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _reads_or_refuses(lambda: load_train_config(path), "recipe.yaml")


# -- proxy run metrics.json ---------------------------------------------------------------------------
_METRICS = {"status": "finished", "mixture_fingerprint": "abc", "num_params": 1000,
            "target": 2.5, "domains": {"a": 2.4, "b": 2.6}, "steps": 40,
            "curve": [{"step": s, "target": 2 + 5 * s ** -0.4,
                       "domains": {"a": 2 + 5 * s ** -0.4, "b": 2.1 + 5 * s ** -0.4}}
                      for s in (10, 20, 40)]}


@SETTINGS
@given(doc=mutations(_METRICS), metric=st.sampled_from(["target", "mean", "worst", "a"]))
def test_proxy_metrics(tmp_path, doc, metric):
    from hf_mixture.search.laws import fit_laws
    from hf_mixture.search.proxy import read_result

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps(doc))
    _reads_or_refuses(lambda: read_result(run), "metrics.json")
    _reads_or_refuses(lambda: fit_laws(tmp_path / "runs", metric=metric).to_text(),
                      "metrics.json", "runs", "r1")
