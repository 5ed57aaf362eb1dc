"""The declarative Mixture: weights, stages, validation, round-trips, resolve, plan, CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hf_mixture.cli import main as cli_main
from hf_mixture.errors import HFMixtureError
from hf_mixture.formats.token_store import TokenStore, TokenStoreWriter
from hf_mixture.mixture.mixture import (
    Component,
    Mixture,
    ResolvedComponent,
    Stage,
    normalize_weights,
)
from hf_mixture.mixture.plan import MixturePlanWarning

# -- normalization and temperature (properties) ------------------------------------------
weight_lists = st.lists(st.floats(0, 1e6), min_size=1, max_size=8).filter(
    lambda ws: any(w > 0 for w in ws))
temperatures = st.floats(0.05, 20)


def as_dict(ws):
    return {f"c{i}": w for i, w in enumerate(ws)}


@settings(deadline=None)
@given(weight_lists, temperatures)
def test_normalized_weights_are_a_distribution(ws, t):
    p = normalize_weights(as_dict(ws), t)
    assert list(p) == list(as_dict(ws))
    assert math.isclose(sum(p.values()), 1.0, rel_tol=1e-9)
    assert all(v >= 0 for v in p.values())
    # Zero stays zero; positive stays positive unless it underflows against a far larger one.
    for w, v in zip(ws, p.values()):
        if w == 0:
            assert v == 0


@settings(deadline=None)
@given(weight_lists)
def test_temperature_one_is_plain_normalization(ws):
    p = normalize_weights(as_dict(ws))
    total = sum(ws)
    for w, v in zip(ws, p.values()):
        assert math.isclose(v, w / total, rel_tol=1e-9, abs_tol=1e-12)


@settings(deadline=None)
@given(weight_lists, temperatures, st.floats(1e-3, 1e3))
def test_scaling_weights_changes_nothing(ws, t, c):
    assume(all(c * w > 0 for w in ws if w > 0))  # subnormal weights would underflow to 0
    p, q = normalize_weights(as_dict(ws), t), normalize_weights(as_dict([c * w for w in ws]), t)
    for a, b in zip(p.values(), q.values()):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


@settings(deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=6), temperatures)
def test_temperature_is_a_power_of_the_ratios(ws, t):
    p = list(normalize_weights(as_dict(ws), t).values())
    for i in range(1, len(ws)):
        assert math.isclose(p[i] / p[0], (ws[i] / ws[0]) ** (1 / t), rel_tol=1e-6)


@settings(deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=6), st.floats(0.1, 5),
       st.floats(1.01, 4))
def test_higher_temperature_flattens(ws, t, factor):
    def entropy(p):
        return -sum(v * math.log(v) for v in p.values() if v > 0)
    low, high = normalize_weights(as_dict(ws), t), normalize_weights(as_dict(ws), t * factor)
    assert entropy(high) >= entropy(low) - 1e-9


def test_weights_by_hand():
    m = Mixture([Component("a", weight=1), Component("b", weight=4), Component("c", weight=0)],
                temperature=2.0)
    assert m.weights() == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert normalize_weights({"a": 1, "b": 1e308, "c": 1e-308}, 0.01)["b"] == 1.0


# -- YAML / JSON round-trip (properties) --------------------------------------------------
texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
names = texts.filter(lambda s: s == s.strip())
queries = st.sampled_from(["", "cluster_id in [3, 7]", "source == 'code' and quality >= 0.5",
                           "not (source != \"x\")", {"cluster_id": [1, 2], "source": "code"},
                           {"quality": 0.5}])
positive = st.floats(1e-6, 1e6, allow_nan=False)


@st.composite
def mixtures(draw):
    comp_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    weights = draw(st.lists(st.floats(0, 1e6), min_size=len(comp_names),
                            max_size=len(comp_names)).filter(lambda ws: any(w > 0 for w in ws)))
    components = [Component(n, draw(queries), w, draw(st.none() | positive))
                  for n, w in zip(comp_names, weights)]
    stages = []
    if draw(st.booleans()):
        fractions = sorted(draw(st.sets(st.floats(0.001, 0.999), max_size=3)))
        tokens = sorted(draw(st.sets(st.integers(1, 10**12), max_size=2)))
        starts = [0.0, *fractions] if draw(st.booleans()) else [0.0, *tokens]
        for i, start in enumerate(starts):
            sw = {n: draw(st.floats(0, 100)) for n in comp_names}
            sw[comp_names[0]] += 1  # not all zero
            stages.append(Stage(start, sw, name=draw(st.none() | st.just(f"s{i}"))))
    return Mixture(components, stages, temperature=draw(st.floats(0.05, 20)),
                   seed=draw(st.integers(0, 2**63)), name=draw(st.none() | texts),
                   description=draw(st.none() | texts))


@settings(max_examples=60, deadline=None)
@given(mixtures())
def test_yaml_and_json_round_trip(m):
    assert Mixture.from_yaml(m.to_yaml()) == m
    assert Mixture.from_json(m.to_json()) == m
    assert Mixture.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert Mixture.from_yaml(m.to_yaml()).fingerprint == m.fingerprint


def test_save_and_load_by_suffix(tmp_path):
    m = Mixture([Component("a", "cluster_id == 1", 2.0, max_epochs=3)], name="x", seed=7)
    for suffix in (".yaml", ".yml", ".json"):
        path = m.save(tmp_path / f"mix{suffix}")
        assert Mixture.load(path) == m
    assert json.loads((tmp_path / "mix.json").read_text())["seed"] == 7
    assert yaml.safe_load((tmp_path / "mix.yaml").read_text())["components"][0]["weight"] == 2.0
    with pytest.raises(HFMixtureError, match=r"mix\.txt.*\.yaml, \.yml or \.json"):
        m.save(tmp_path / "mix.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.json", "mix.yaml", "mix.yml"]


def test_yaml_quirks_and_safe_load(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string; weights accept it as the number it spells.
    m = Mixture.from_yaml("components:\n- {name: a, weight: 1e-3}\n- {name: b}\n")
    assert m.components[0].weight == 0.001
    # PyYAML folds a NEL written in a plain scalar into a space; names must survive.
    odd = Mixture([Component("0\x850"), Component("b\u2028c"), Component("français")])
    assert Mixture.from_yaml(odd.to_yaml()) == odd
    path = tmp_path / "evil.yaml"
    path.write_text("components: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(HFMixtureError, match=r"evil\.yaml is not valid YAML"):
        Mixture.load(path)


def test_fingerprint_tracks_sampling_not_titles():
    base = Mixture([Component("a", weight=1), Component("b", weight=2)], seed=1)
    assert len(base.fingerprint) == 16 and int(base.fingerprint, 16) >= 0
    renamed = Mixture([Component("a", weight=1), Component("b", weight=2)], seed=1,
                      name="other", description="retitled")
    assert renamed.fingerprint == base.fingerprint
    for changed in (Mixture([Component("a", weight=1), Component("b", weight=3)], seed=1),
                    Mixture([Component("a", weight=1), Component("b", weight=2)], seed=2),
                    Mixture([Component("a", weight=1), Component("b", weight=2)], seed=1,
                            temperature=2.0),
                    Mixture([Component("a", "x == 1", weight=1), Component("b", weight=2)],
                            seed=1)):
        assert changed.fingerprint != base.fingerprint


# -- stages -------------------------------------------------------------------------------
def staged():
    return Mixture([Component("a"), Component("b")], stages=[
        Stage(0, {"a": 1, "b": 1}),
        Stage(0.5, {"a": 3, "b": 1}, name="mid"),
        Stage(0.9, {"a": 0, "b": 1}, name="anneal"),
    ])


def test_stage_at_and_weights_at():
    m = staged()
    assert m.stage_boundaries(1000) == [0, 500, 900]
    assert [m.stage_at(t, 1000) for t in (0, 499, 500, 899, 900, 5000)] == [0, 0, 1, 1, 2, 2]
    assert m.weights_at(0, 1000) == {"a": 0.5, "b": 0.5}
    assert m.weights_at(500, 1000) == {"a": 0.75, "b": 0.25}
    assert m.weights_at(950, 1000) == {"a": 0.0, "b": 1.0}
    # Without stages: stage 0, the base weights.
    plain = Mixture([Component("a", weight=1), Component("b", weight=3)])
    assert plain.stage_at(10**9, None) == 0
    assert plain.weights_at(5, None) == {"a": 0.25, "b": 0.75}


def test_token_count_stages_need_no_total_and_round_fractions():
    m = Mixture([Component("a"), Component("b")],
                stages=[Stage(0, {"a": 1, "b": 0}), Stage(1000, {"a": 0, "b": 1})])
    assert m.stage_at(999, None) == 0 and m.stage_at(1000, None) == 1
    assert isinstance(m.stages[1].start, int)
    with pytest.raises(HFMixtureError, match="fraction 0.5 of the run; pass total_tokens"):
        staged().stage_at(10, None)
    # 0.29 * 100 is 28.999... in floating point: the boundary rounds to 29.
    m = Mixture([Component("a")], stages=[Stage(0, {"a": 1}), Stage(0.29, {"a": 2})])
    assert m.stage_boundaries(100) == [0, 29]


def test_mixed_units_are_ordered_once_the_run_length_is_known():
    m = Mixture([Component("a")], stages=[Stage(0, {"a": 1}), Stage(0.5, {"a": 2}),
                                          Stage(600, {"a": 3}, name="late")])
    assert m.stage_boundaries(1000) == [0, 500, 600]
    with pytest.raises(HFMixtureError, match=r"stages\[2\] \('late'\) starts at token 600, not "
                                             r"after stages\[1\] at token 1000"):
        m.stage_at(0, 2000)


def test_temperature_applies_to_stage_weights():
    m = Mixture([Component("a"), Component("b")], temperature=2.0,
                stages=[Stage(0, {"a": 1, "b": 4})])
    assert m.weights_at(0, None) == pytest.approx({"a": 1 / 3, "b": 2 / 3})


# -- bad input: one sentence naming the field ---------------------------------------------
@pytest.mark.parametrize("kwargs, fragment", [
    ({"components": [Component("a", weight=1)], "temperature": 0}, "'temperature' is 0"),
    ({"components": [Component("a", weight=1)], "temperature": -1.0}, "'temperature' is -1.0"),
    ({"components": [Component("a", weight=1)], "temperature": float("nan")}, "'temperature'"),
    ({"components": [Component("a", weight=1)], "seed": -1}, "'seed'"),
    ({"components": [Component("a", weight=1)], "seed": 1.5}, "'seed'"),
    ({"components": []}, "'components' must be a non-empty list"),
    ({"components": [Component("a", weight=0), Component("b", weight=0)]}, "all zero"),
    ({"components": [Component("a"), Component("a")]}, "'a' appears more than once"),
    ({"components": [Component("a")], "stages": [Stage(0, {"a": 1, "zz": 1})]},
     "unknown component 'zz'"),
    ({"components": [Component("a"), Component("b")], "stages": [Stage(0, {"a": 1})]},
     "lacks the component 'b'"),
    ({"components": [Component("a")], "stages": [Stage(0.1, {"a": 1})]},
     "first stage must start at 0"),
    ({"components": [Component("a")],
      "stages": [Stage(0, {"a": 1}), Stage(0.6, {"a": 1}), Stage(0.4, {"a": 1}, name="back")]},
     r"stages\[2\] \('back'\): field 'start' is 0.4, not after stages\[1\] at 0.6"),
    ({"components": [Component("a")],
      "stages": [Stage(0, {"a": 1}), Stage(500, {"a": 1}), Stage(500, {"a": 2})]},
     "field 'start' is 500, not after"),
    ({"components": [Component("a")],
      "stages": [Stage(0, {"a": 1}), Stage(500, {"a": 1}), Stage(0, {"a": 2})]},
     "field 'start' is 0.0, not after"),
    ({"components": [Component("a")],
      "stages": [Stage(0, {"a": 1}, name="s"), Stage(5, {"a": 1}, name="s")]},
     "Stage name 's' appears more than once"),
])
def test_bad_mixtures(kwargs, fragment):
    with pytest.raises(HFMixtureError, match=fragment):
        Mixture(**kwargs)


@pytest.mark.parametrize("make, fragment", [
    (lambda: Component("a", weight=-1), "component 'a': field 'weight' is -1"),
    (lambda: Component("a", weight=float("nan")), "field 'weight' is nan"),
    (lambda: Component("a", weight=float("inf")), "field 'weight' is inf"),
    (lambda: Component("a", weight="heavy"), "field 'weight' must be a number, got 'heavy'"),
    (lambda: Component("a", weight=True), "field 'weight' must be a number"),
    (lambda: Component("", weight=1), "field 'name' must be a non-empty string"),
    (lambda: Component("  ", weight=1), "field 'name' must be a non-empty string"),
    (lambda: Component(" a", weight=1), "leading or trailing spaces"),
    (lambda: Component("a", max_epochs=0), "field 'max_epochs' is 0"),
    (lambda: Component("a", max_epochs=-2.5), "field 'max_epochs' is -2.5"),
    (lambda: Component("a", max_epochs=float("inf")), "field 'max_epochs' is inf"),
    (lambda: Component("a", query="__import__('os')"), "component 'a': field 'query'"),
    (lambda: Component("a", query="cluster_id =="), "not valid syntax"),
    (lambda: Component("a", query=5), "field 'query' must be a string or a mapping"),
    (lambda: Stage(-0.1, {"a": 1}), "field 'start' is -0.1"),
    (lambda: Stage(1500.5, {"a": 1}), "token count and must be a whole number"),
    (lambda: Stage(float("nan"), {"a": 1}), "field 'start' is nan"),
    (lambda: Stage(0, {}), "field 'weights' must be a non-empty mapping"),
    (lambda: Stage(0, {"a": -1}), r"field 'weights\.a' is -1"),
    (lambda: Stage(0, {"a": float("nan")}), r"field 'weights\.a' is nan"),
    (lambda: Stage(0, {"a": 0, "b": 0}, name="cool"), "stage 'cool': field 'weights' are all"),
])
def test_bad_components_and_stages(make, fragment):
    with pytest.raises(HFMixtureError, match=fragment):
        make()


@pytest.mark.parametrize("text, fragment", [
    ("components:\n- {name: a, wieght: 2}\n", r"components\[0\] has the unknown key 'wieght'"),
    ("components:\n- {name: a}\nseeed: 3\n", "The mixture has the unknown key 'seeed'"),
    ("components:\n- {name: a}\nstages:\n- {start: 0, weights: {a: 1}, end: 5}\n",
     r"stages\[0\] has the unknown key 'end'"),
    ("components:\n- {name: a}\nstages:\n- {weights: {a: 1}}\n",
     r"stages\[0\] has no field 'start'"),
    ("components:\n- {weight: 2}\n", r"components\[0\] has no field 'name'"),
    ("components:\n- {name: a, weight: -3}\n", "field 'weight' is -3"),
    ("components:\n- {name: a, weight: .nan}\n", "field 'weight' is nan"),
    ("components:\n- {name: a, weight: 0}\n- {name: b, weight: 0}\n", "all zero"),
    ("components:\n- {name: a}\n- {name: a}\n", "'a' appears more than once"),
    ("components:\n- {name: a}\ntemperature: 0\n", "'temperature' is 0"),
    ("components:\n- {name: a, max_epochs: 0}\n", "'max_epochs' is 0"),
    ("components:\n- {name: a}\n- {name: b}\nstages:\n- {start: 0, weights: {a: 1, c: 1}}\n",
     "unknown component 'c'"),
    (("components:\n- {name: a}\nstages:\n- {start: 0, weights: {a: 1}}\n"
      "- {start: 0.7, weights: {a: 1}}\n- {start: 0.3, weights: {a: 1}}\n"), "increasing order"),
    ("components:\n- {name: a, query: 'x.y == 1'}\n", "attribute access"),
    ("components: [\n", "not valid YAML at line"),
    ("- just\n- a list\n", "The mixture must be a mapping"),
    ("name: lonely\n", "has no field 'components'"),
    ("", "is empty"),
])
def test_bad_files_name_the_file_and_field(tmp_path, text, fragment):
    path = tmp_path / "mix.yaml"
    path.write_text(text)
    with pytest.raises(HFMixtureError, match=fragment) as err:
        Mixture.load(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_json_file_names_the_file(tmp_path):
    path = tmp_path / "mix.json"
    path.write_text('{"components": [{"name": "a", "weight": -1}]}')
    with pytest.raises(HFMixtureError, match=r"mix\.json: .*'weight' is -1"):
        Mixture.load(path)
    path.write_text('{"components": [')
    with pytest.raises(HFMixtureError, match=r"mix\.json is not valid JSON"):
        Mixture.load(path)
    with pytest.raises(HFMixtureError, match="does not exist"):
        Mixture.load(tmp_path / "absent.yaml")


# -- TRL's datasets: list -----------------------------------------------------------------
def test_from_trl_datasets():
    m = Mixture.from_trl_datasets([
        {"path": "HuggingFaceFW/fineweb-edu", "name": "sample-10BT", "split": "train",
         "proportion": 0.7, "columns": ["text"]},
        {"id": "bigcode/the-stack", "config": "python", "weight": 0.2},
        {"path": "local/folder/wiki"},
    ], seed=3)
    assert m.component_names == ["fineweb-edu-sample-10BT", "the-stack-python", "wiki"]
    assert m.weights() == pytest.approx({"fineweb-edu-sample-10BT": 0.7 / 1.9,
                                         "the-stack-python": 0.2 / 1.9, "wiki": 1 / 1.9})
    assert m.seed == 3
    # ... and the same list in a file, in place of components:
    same = Mixture.from_yaml("seed: 3\ndatasets:\n"
                             "- {path: HuggingFaceFW/fineweb-edu, name: sample-10BT, "
                             "proportion: 0.7}\n"
                             "- {id: bigcode/the-stack, config: python, weight: 0.2}\n"
                             "- {path: local/folder/wiki}\n")
    assert same == m


@pytest.mark.parametrize("entries, fragment", [
    ([], "'datasets' must be a non-empty list"),
    ([{"name": "x"}], r"datasets\[0\] must have exactly one of the fields path / id"),
    ([{"path": "a", "id": "b"}], "exactly one of the fields"),
    ([{"path": "a", "proportion": 1, "weight": 2}], "both fields 'proportion' and 'weight'"),
    ([{"path": "a", "split": "test"}], "field 'split' is 'test'"),
    ([{"path": "a", "revision": "main"}], "unknown key 'revision'"),
    ([{"path": "a", "weight": -1}], r"datasets\[0\]: field 'weight' is -1"),
    ([{"path": "org/a"}, {"path": "other/a"}], "'a' appears more than once"),
])
def test_bad_trl_datasets(entries, fragment):
    with pytest.raises(HFMixtureError, match=fragment):
        Mixture.from_trl_datasets(entries)


# -- against a token store ----------------------------------------------------------------
LENGTHS = {"cluster_0": [10, 20, 30, 40], "cluster_1": [50, 50], "cluster_2": [5, 5, 5]}


def make_store(path, eos=True):
    """cluster_0: 4 docs / 100 tokens, cluster_1: 2 / 100, cluster_2: 3 / 15."""
    with TokenStoreWriter(path, vocab_size=64, eos_token_id=0 if eos else None,
                          tokenizer_name="toy") as w:
        for k, (component, lengths) in enumerate(LENGTHS.items()):
            for i, n in enumerate(lengths):
                w.add(component, "train", np.full(n, 1 + i), {
                    "cluster_id": k, "source": ["code", "prose"][i % 2], "quality": i / 4})
            w.add(component, "validation", [1, 2, 3], {"cluster_id": k, "source": "code",
                                                       "quality": 1.0})
    return TokenStore(path)


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "store")


def test_resolve_names_and_queries(store):
    m = Mixture([Component("cluster_1"),
                 Component("code", "source == 'code'"),
                 Component("good", {"cluster_id": [0, 2], "quality": 0.25})])
    by_name = {r.name: r for r in m.resolve(store)}
    r = by_name["cluster_1"]
    assert [(k, v.tolist()) for k, v in r.parts] == [("cluster_1", [0, 1])]
    assert (r.num_docs, r.num_tokens) == (2, 100)
    r = by_name["code"]  # doc 0 and 2 of every store component
    assert [(k, v.tolist()) for k, v in r.parts] == [
        ("cluster_0", [0, 2]), ("cluster_1", [0]), ("cluster_2", [0, 2])]
    assert (r.num_docs, r.num_tokens) == (5, 10 + 30 + 50 + 5 + 5)
    assert all(v.dtype == np.int64 and not v.flags.writeable for _, v in r.parts)
    r = by_name["good"]
    assert [(k, v.tolist()) for k, v in r.parts] == [("cluster_0", [1]), ("cluster_2", [1])]
    assert r.num_tokens == 25
    assert m.resolve(store) == m.resolve(store)
    assert isinstance(r, ResolvedComponent)


def test_resolve_validation_split(store):
    (r,) = Mixture([Component("q", "cluster_id >= 1")]).resolve(store, "validation")
    assert [k for k, _ in r.parts] == ["cluster_1", "cluster_2"] and r.num_tokens == 6
    with pytest.raises(HFMixtureError, match="'validation' split"):
        Mixture([Component("q", "quality < 0.5")]).resolve(store, "validation")
    (empty,) = Mixture([Component("q", "quality < 0.5")]).resolve(store, "validation",
                                                                   allow_empty=True)
    assert empty.num_docs == 0 and empty.parts == ()


def test_resolve_errors_name_component_query_and_fields(store):
    with pytest.raises(HFMixtureError, match="Component 'none' matches no document .*"
                                             r"query 'cluster_id == 9'"):
        Mixture([Component("none", "cluster_id == 9")]).resolve(store)
    with pytest.raises(HFMixtureError, match="'lang', which no component .* cluster_id, "
                                             "quality, source"):
        Mixture([Component("en", "lang == 'en'")]).resolve(store)
    with pytest.raises(HFMixtureError, match="Component 'wiki' has no query and token store .* "
                                             "has cluster_0, cluster_1, cluster_2"):
        Mixture([Component("wiki")]).resolve(store)


def test_from_store(store):
    natural = Mixture.from_store(store, seed=5)
    assert natural.component_names == ["cluster_0", "cluster_1", "cluster_2"]
    assert natural.weights() == pytest.approx({"cluster_0": 100 / 215, "cluster_1": 100 / 215,
                                               "cluster_2": 15 / 215})
    assert natural.seed == 5
    assert Mixture.from_store(store, "uniform").weights() == pytest.approx(
        {"cluster_0": 1 / 3, "cluster_1": 1 / 3, "cluster_2": 1 / 3})
    given = Mixture.from_store(store, {"cluster_0": 1, "cluster_1": 0, "cluster_2": 3})
    assert given.weights()["cluster_2"] == 0.75
    with pytest.raises(HFMixtureError, match="'cluster_9', which token store"):
        Mixture.from_store(store, {"cluster_9": 1, "cluster_0": 1, "cluster_1": 1,
                                   "cluster_2": 1})
    with pytest.raises(HFMixtureError, match="lack the store component 'cluster_2'"):
        Mixture.from_store(store, {"cluster_0": 1, "cluster_1": 1})
    with pytest.raises(HFMixtureError, match="'natural', 'uniform' or a dict.*'square'"):
        Mixture.from_store(store, "square")


# -- the plan, checked by hand --------------------------------------------------------------
def test_plan_numbers(store):
    m = Mixture([Component("c0", "cluster_id == 0", weight=3, max_epochs=5),
                 Component("cluster_1", weight=1)], name="hand")
    with pytest.warns(MixturePlanWarning, match="'c0' would be repeated 7.21 epochs"):
        plan = m.plan(1000, store)
    a, b = plan.rows
    # c0: 4 docs, 100 tokens + 4 EOS = 104 available; 3/4 of 1000 = 750 tokens; 750/104 epochs.
    assert (a.component, a.docs, a.tokens_available) == ("c0", 4, 104)
    assert a.proportion == 0.75 and a.effective_tokens == 750
    assert a.epochs == pytest.approx(750 / 104) and a.over_cap
    # cluster_1: 2 docs, 100 + 2 = 102 available; 250 tokens; 250/102 epochs, no cap.
    assert (b.docs, b.tokens_available, b.effective_tokens) == (2, 102, 250)
    assert b.epochs == pytest.approx(250 / 102) and not b.over_cap
    assert len(plan.warnings) == 1 and "max_epochs 5" in plan.warnings[0]
    text = str(plan)
    assert "c0" in text and "75.00%" in text and "750" in text and "7.21 !" in text
    assert "2.45" in text and "1,000" in text
    md = plan.to_markdown()
    assert "| c0 | 4 | 104 | 75.00% | 750 | 7.21 ! | 5 |" in md
    assert "| cluster_1 | 2 | 102 | 25.00% | 250 | 2.45 | - |" in md
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["rows"][0]["effective_tokens"] == 750 and d["mixture"] == "hand"
    assert d["mixture_fingerprint"] == m.fingerprint and d["store_fingerprint"] == store.fingerprint


def test_plan_without_eos_counts_store_tokens(tmp_path):
    store = make_store(tmp_path / "noeos", eos=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cap: no warning
        plan = Mixture([Component("cluster_0"), Component("cluster_2")]).plan(230, store)
    assert [r.tokens_available for r in plan.rows] == [100, 15]
    assert [r.epochs for r in plan.rows] == pytest.approx([115 / 100, 115 / 15])
    assert "exclude EOS" in str(plan)


def test_plan_with_stages(store):
    m = Mixture([Component("a", "cluster_id == 0", max_epochs=6),
                 Component("b", "cluster_id == 1", max_epochs=6)],
                stages=[Stage(0, {"a": 1, "b": 1}), Stage(600, {"a": 0, "b": 1}, name="b-only"),
                        Stage(0.9, {"a": 1, "b": 0}, name="tail")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every component within its cap: no warning
        plan = m.plan(1000, store)
    s0, s1, s2 = plan.stages
    assert [(s.start_token, s.end_token) for s in plan.stages] == [(0, 600), (600, 900),
                                                                    (900, 1000)]
    assert [r.effective_tokens for r in s0.rows] == [300, 300]
    assert [r.effective_tokens for r in s1.rows] == [0, 300]
    assert [r.effective_tokens for r in s2.rows] == [100, 0]
    a, b = plan.rows
    # a: 300 + 0 + 100 = 400 tokens over 104 available; b: 300 + 300 = 600 over 102.
    assert (a.effective_tokens, a.proportion) == (400, 0.4)
    assert (b.effective_tokens, b.proportion) == (600, 0.6)
    assert a.epochs == pytest.approx(400 / 104) and not a.over_cap
    assert b.epochs == pytest.approx(600 / 102) and not b.over_cap  # 5.88 < 6
    assert plan.warnings == []
    assert "stage 1 (b-only): tokens 600 to 900 (300)" in str(plan)
    # A stage that starts after the run ends is reported, and a cap crossed mid-run is located.
    m2 = Mixture([Component("a", "cluster_id == 0", max_epochs=2), Component("cluster_1")],
                 stages=[Stage(0, {"a": 1, "cluster_1": 1}),
                         Stage(5000, {"a": 0, "cluster_1": 1}, name="never")])
    with pytest.warns(MixturePlanWarning) as caught:
        plan2 = m2.plan(1000, store)
    messages = [str(w.message) for w in caught]
    assert any("stage 1 (never) starts at token 5,000" in msg for msg in messages)
    assert any("'a' would be repeated 4.81 epochs" in msg and "crossing it in stage 0" in msg
               for msg in messages)
    assert plan2.stages[1].tokens == 0


def test_plan_rejects_bad_token_counts(store):
    m = Mixture([Component("cluster_0")])
    for bad in (0, -5, 1.5, "many"):
        with pytest.raises(HFMixtureError, match="total_tokens"):
            m.plan(bad, store)


# -- the command line -----------------------------------------------------------------------
def test_cli_plan_and_validate(tmp_path, store, capsys):
    path = tmp_path / "mix.yaml"
    Mixture([Component("c0", "cluster_id == 0", weight=3, max_epochs=5),
             Component("cluster_1", weight=1)], name="hand").save(path)
    assert cli_main(["plan", str(path), "--store", str(store.path), "--tokens", "1K"]) == 0
    out, err = capsys.readouterr()
    assert "7.21 !" in out and "750" in out
    assert "warning: component 'c0' would be repeated 7.21 epochs" in err
    assert cli_main(["plan", str(path), "--store", str(store.path), "--tokens", "1e3",
                     "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_tokens"] == 1000 and data["rows"][1]["effective_tokens"] == 250
    assert cli_main(["validate", str(path), "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "is valid: 2 components" in out and "c0: weight 0.7500" in out
    assert "4 docs, 100 tokens" in out
    assert cli_main(["validate", str(path)]) == 0


def test_cli_bad_input_exits_2_with_one_line(tmp_path, store, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("components:\n- {name: a, weight: -1}\n")
    assert cli_main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml" in err and "'weight' is -1" in err
    good = tmp_path / "good.yaml"
    Mixture([Component("x", "lang == 'en'")]).save(good)
    assert cli_main(["validate", str(good), "--store", str(store.path)]) == 2
    assert "'lang'" in capsys.readouterr().err
    assert cli_main(["plan", str(good), "--store", str(store.path), "--tokens", "lots"]) == 2
    assert "--tokens 'lots'" in capsys.readouterr().err


def test_plan_warns_only_when_really_above_the_cap(store):
    """A mixture at its cap (weights stored to 8 decimals) is not "4.00 epochs ... above 4"."""
    import warnings

    def plan_for(w0):
        m = Mixture([Component("c0", "cluster_id == 0", weight=w0, max_epochs=5),
                     Component("cluster_1", weight=1 - w0)], name="at-cap")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan = m.plan(1000, store)
        return plan, [w for w in caught if issubclass(w.category, MixturePlanWarning)]

    plan, caught = plan_for(0.52 + 3e-9)  # 104 tokens x 5 epochs = 520 of 1000, plus round-off
    assert plan.rows[0].epochs > 5 and not plan.rows[0].over_cap and not caught
    assert "5.00 !" not in str(plan)
    plan, caught = plan_for(0.53)
    assert plan.rows[0].over_cap and "5.10 epochs" in str(caught[0].message)


def test_component_descriptions_are_labels_for_people(store):
    m = Mixture([Component("c0", "cluster_id == 0", weight=1, description="wordnet, noun, verb"),
                 Component("cluster_1", weight=1)], name="labelled")
    again = Mixture.from_dict(yaml.safe_load(yaml.safe_dump(m.to_dict())))
    assert again.components[0].description == "wordnet, noun, verb"
    assert again.components[0].label == "c0 — wordnet, noun, verb"
    assert again.components[1].label == "cluster_1"
    # A label does not change what is sampled.
    plain = Mixture([Component("c0", "cluster_id == 0", weight=1), Component("cluster_1", weight=1)])
    assert m.fingerprint == plain.fingerprint
    assert "c0 — wordnet, noun, verb" in str(m.plan(100, store))
    with pytest.raises(HFMixtureError, match="field 'description' must be a string"):
        Component("a", description=3)
