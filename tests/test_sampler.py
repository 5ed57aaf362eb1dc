"""The sampler over the token store: exact decisions, packed sequences, resume, caps, bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hf_mixture.errors import HFMixtureError
from hf_mixture.formats.token_store import TokenStore, TokenStoreWriter
from hf_mixture.mixture import Component, Mixture, MixtureDataLoader, MixtureDataset, Stage
from hf_mixture.mixture.sampler import (
    MixtureSampler,
    PackedStreams,
    choose_components,
    counter_uniform,
    occurrence_rank,
)

EOS = 0
VOCAB = 1000


def make_store(path, docs_per_component=(40, 30, 25), max_len=40, seed=0):
    """Components cluster_<i> of random documents (ids 1..VOCAB-1, never EOS)."""
    rng = np.random.default_rng(seed)
    with TokenStoreWriter(path, vocab_size=VOCAB, eos_token_id=EOS, tokenizer_name="test") as w:
        for c, n in enumerate(docs_per_component):
            for i in range(n):
                tokens = rng.integers(1, VOCAB, int(rng.integers(1, max_len)))
                w.add(f"cluster_{c}", "train", tokens, {"cluster_id": c, "doc": i})
            w.add(f"cluster_{c}", "validation", [1, 2, 3], {"cluster_id": c, "doc": -1})
    return TokenStore(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "store")


def natural(store, **kwargs):
    return Mixture.from_store(store, "uniform", **kwargs)


def take(loader, n):
    out = []
    for i, batch in enumerate(loader):
        out.append(batch["input_ids"].clone())
        if i + 1 == n:
            break
    return out


# -- reference implementations of the documented design --------------------------------
def reference_sequence(store, resolved, c, k, seq_len, seed):
    """Sequence k of component c, built the slow obvious way from the design's definition."""
    docs = [np.asarray(store.document(part, int(i))) for part, idx in resolved[c].parts
            for i in idx]
    stream_len = sum(len(d) + 1 for d in docs)
    per_epoch = stream_len // seq_len
    epoch, k = divmod(k, per_epoch)
    perm = np.random.Generator(np.random.PCG64([seed, c, epoch])).permutation(len(docs))
    stream = np.concatenate([np.r_[docs[i], EOS] for i in perm])
    return stream[k * seq_len:(k + 1) * seq_len]


def reference_keys(seed, weight_segments, caps, n):
    """Keys of samples 0..n-1, one by one: ``weight_segments`` = [(from_sample, weights)]."""
    counts = np.zeros(len(weight_segments[0][1]), dtype=np.int64)
    keys = []
    for s in range(n):
        w = np.asarray([w for start, w in weight_segments if start <= s][-1], dtype=float)
        w = w * (counts < caps)
        if not w.sum() > 0:
            break
        c = int(choose_components(counter_uniform(seed, s, 1), w)[0])
        keys.append((c, int(counts[c])))
        counts[c] += 1
    return keys


# -- pure functions ---------------------------------------------------------------------
def test_counter_uniform_is_a_pure_function_of_seed_and_index():
    u = counter_uniform(7, 0, 10_000)
    assert u.min() >= 0 and u.max() < 1
    assert np.array_equal(counter_uniform(7, 5000, 3), u[5000:5003])
    assert not np.array_equal(counter_uniform(8, 0, 100), u[:100])
    # Uniform enough: each decile within 5 sigma of 1000.
    hist = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(hist - 1000) < 5 * np.sqrt(1000 * 0.9))
    assert counter_uniform(2**70, 0, 1).shape == (1,)  # any int seed works (taken mod 2**64)


def test_choose_components_never_picks_a_zero_weight_component():
    u = np.r_[counter_uniform(0, 0, 5000), 1 - 1e-16, 0.0]
    w = np.array([0.0, 1 / 3, 0.0, 2 / 3, 0.0])
    assert set(choose_components(u, w).tolist()) == {1, 3}


def test_occurrence_rank():
    assert occurrence_rank(np.array([2, 0, 2, 2, 0])).tolist() == [0, 0, 1, 2, 1]
    assert occurrence_rank(np.array([], dtype=np.int64)).tolist() == []


# -- materialization --------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq_len=st.integers(1, 64), seed=st.integers(0, 2**32), window_rows=st.integers(1, 9),
       data=st.data())
def test_sequences_match_the_reference_definition(store, seq_len, seed, window_rows, data):
    mixture = Mixture([Component("a", "cluster_id == 0"),
                       Component("ab", "cluster_id in [1, 2] and doc < 12"),  # two memory maps
                       Component("c", "cluster_id == 2")])
    resolved = mixture.resolve(store)
    streams = PackedStreams(store, resolved, seq_len=seq_len, seed=seed)
    streams.rows_per_window = window_rows  # exercise window edges with tiny windows
    n = data.draw(st.integers(1, 12))
    comps = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    spe = streams.seqs_per_epoch[comps]
    ks = np.array([data.draw(st.integers(0, 3 * int(s))) for s in spe])
    got = streams.materialize(comps, ks)
    for row, c, k in zip(got, comps, ks):
        np.testing.assert_array_equal(row, reference_sequence(store, resolved, c, k, seq_len, seed))
    small = streams.materialize(comps, ks, out=np.empty(got.shape, dtype=store.dtype))
    np.testing.assert_array_equal(small, got)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq_len=st.integers(1, 50), epoch=st.integers(0, 5))
def test_each_document_appears_once_per_epoch(store, seq_len, epoch):
    resolved = natural(store).resolve(store)
    streams = PackedStreams(store, resolved, seq_len=seq_len, seed=3)
    for c, comp in enumerate(resolved):
        spe = int(streams.seqs_per_epoch[c])
        ks = np.arange(epoch * spe, (epoch + 1) * spe)
        flat = streams.materialize(np.full(spe, c), ks).reshape(-1)
        perm = streams.permutation(c, epoch)
        docs = [np.asarray(store.document(comp.parts[0][0], int(i))) for i in perm]
        stream = np.concatenate([np.r_[d, EOS] for d in docs])
        # The epoch is the permuted stream, cut where it can no longer fill a sequence.
        np.testing.assert_array_equal(flat, stream[:spe * seq_len])
        assert len(stream) - spe * seq_len < seq_len
        # Documents are EOS-terminated and EOS never occurs inside one: the complete
        # documents of the epoch are distinct docs, in permutation order.
        pieces = np.split(flat, np.flatnonzero(flat == EOS) + 1)[:-1]
        assert [p[:-1].tolist() for p in pieces] == [d.tolist() for d in docs[:len(pieces)]]
        assert len(pieces) >= len(docs) - (seq_len + 1)


def test_dataset_getitem_by_name_and_index(store):
    data = MixtureDataset(store, natural(store), seq_len=8)
    a = data[("cluster_1", 3)]
    b = data[(1, 3)]
    assert a["input_ids"].shape == (8,) and a["input_ids"].dtype.is_floating_point is False
    assert np.array_equal(a["input_ids"], b["input_ids"])
    assert np.array_equal(a["input_ids"], a["labels"])
    a["labels"][0] = -100  # labels is a copy: masking it leaves input_ids alone
    assert a["input_ids"][0] != -100


# -- decisions --------------------------------------------------------------------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.lists(st.floats(0.0, 10.0), min_size=3, max_size=3).filter(lambda w: sum(w) > 0.1),
       seed=st.integers(0, 2**31))
def test_realized_proportions_match_weights(store, weights, seed):
    mixture = Mixture.from_store(store, dict(zip(store.components, weights)), seed=seed)
    data = MixtureDataset(store, mixture, seq_len=4)
    n = 20_000
    comps, _, complete = data.sampler.choose(n)
    assert complete
    p = np.asarray(weights) / sum(weights)
    counts = np.bincount(comps, minlength=3)
    # Binomial: within 5 standard deviations (plus a hair for p near 0 or 1).
    assert np.all(np.abs(counts - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1), (counts, n * p)
    assert np.all(counts[p == 0] == 0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), change_at=st.integers(0, 300), stage_at=st.integers(1, 400),
       new=st.lists(st.floats(0, 5), min_size=3, max_size=3).filter(lambda w: sum(w) > 0.1))
@example(seed=0, change_at=1, stage_at=1, new=[0.0, 5e-324, 2.0])  # underflows when normalized
def test_decisions_match_the_one_by_one_definition(store, seed, change_at, stage_at, new):
    """Blocks, stages, weight changes and caps give exactly the naive sample-by-sample keys."""
    seq_len = 4
    mixture = Mixture([Component("cluster_0", weight=1, max_epochs=1.5),
                       Component("cluster_1", weight=2),
                       Component("cluster_2", weight=3, max_epochs=0.5)],
                      stages=[Stage(0, {"cluster_0": 1, "cluster_1": 2, "cluster_2": 3}),
                              Stage(stage_at * seq_len, {"cluster_0": 3, "cluster_1": 0,
                                                         "cluster_2": 1})], seed=seed)
    data = MixtureDataset(store, mixture, seq_len=seq_len)
    sampler = data.sampler
    sampler._BLOCK = 64  # many block edges
    first = sampler.choose(change_at)
    data.live.set_weights(new)
    rest = sampler.choose(500 - change_at)
    got = list(zip(np.r_[first[0], rest[0]].tolist(), np.r_[first[1], rest[1]].tolist()))
    p0 = np.array([1, 2, 3.0])
    stage = np.array([3, 0, 1.0])
    segments = [(0, p0)]
    if stage_at <= change_at:
        segments.append((stage_at, stage))
    segments.append((change_at, np.asarray(new)))
    if stage_at > change_at:
        segments.append((stage_at, stage))
    assert got == reference_keys(seed, segments, sampler.caps, 500)


def test_same_seed_same_sequence_other_seed_other_sequence(store):
    def run(seed):
        data = MixtureDataset(store, natural(store), seq_len=16, seed=seed)
        return np.concatenate(take(MixtureDataLoader(data, batch_size=4), 6))
    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(save_after=st.integers(1, 20), change_after=st.integers(0, 20), stage_at=st.integers(1, 40),
       batch_size=st.integers(1, 5))
def test_resume_gives_the_identical_continuation(store, save_after, change_after, stage_at,
                                                 batch_size):
    """Save after any batch, across a weight change and a stage boundary: same continuation."""
    seq_len, total = 8, 30
    names = store.components
    mixture = Mixture([Component(n, weight=w) for n, w in zip(names, (1, 2, 3))],
                      stages=[Stage(0, dict(zip(names, (1, 2, 3)))),
                              Stage(stage_at * batch_size * seq_len, dict(zip(names, (5, 0, 1))))])

    def run(first, stop, state=None):
        """Batches first..stop-1; the weight change comes after batch change_after."""
        data = MixtureDataset(store, mixture, seq_len=seq_len)
        if state is not None:
            data.load_state_dict(json.loads(state))
        out = []
        for i, batch in enumerate(MixtureDataLoader(data, batch_size=batch_size), start=first):
            out.append(batch["input_ids"])
            if i == change_after:  # a callback after this step: applies from the next batch
                data.live.set_weights({names[0]: 1, names[2]: 4}, reason="callback")
            if i + 1 == stop:
                return out, json.dumps(data.state_dict())

    full, _ = run(0, total)
    head, state = run(0, save_after)
    tail, _ = run(save_after, total, state)
    assert len(head) + len(tail) == total
    for a, b in zip(head + tail, full):
        assert np.array_equal(a, b)


def test_state_dict_is_small_json_and_load_is_o1(store):
    data = MixtureDataset(store, natural(store), seq_len=8)
    data.sampler.choose(10_000_000)  # a late position: 10M samples decided
    state = json.loads(json.dumps(data.state_dict()))
    assert state["sample"] == 10_000_000 and sum(state["counts"]) == 10_000_000
    assert len(json.dumps(state)) < 2000
    other = MixtureDataset(store, natural(store), seq_len=8)
    other.load_state_dict(state)
    a = next(iter(MixtureDataLoader(data, batch_size=4)))["input_ids"]
    b = next(iter(MixtureDataLoader(other, batch_size=4)))["input_ids"]
    assert np.array_equal(a, b)


# -- caps -------------------------------------------------------------------------------
def test_max_epochs_cap_renormalizes_then_stops(store, caplog):
    names = store.components
    mixture = Mixture([Component(names[0], weight=5, max_epochs=1),
                       Component(names[1], weight=1, max_epochs=2),
                       Component(names[2], weight=0)])
    data = MixtureDataset(store, mixture, seq_len=8)
    spe = data.streams.seqs_per_epoch
    with caplog.at_level(logging.WARNING, logger="hf_mixture.mixture.sampler"):
        batches = list(MixtureDataLoader(data, batch_size=3))
    # Every sequence of both capped components is used at most once per allowed epoch...
    assert data.sampler.counts[0] == spe[0]
    assert data.sampler.counts[1] <= 2 * spe[1]
    # ...and the run ends without a partial batch when nothing with weight is left.
    assert data.sampler.counts[1] > 2 * spe[1] - 3
    assert all(b["input_ids"].shape == (3, 8) for b in batches)
    assert len(batches) * 3 == data.sampler.counts.sum()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "reached its max_epochs cap" in messages and "the sampler stops" in messages


# -- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("weights, match", [
    ({"cluster_0": float("nan")}, "finite"),
    ({"cluster_0": -1.0, "cluster_1": 2}, ">= 0"),
    ({"cluster_0": 0, "cluster_1": 0}, "all zero"),
    ({"cluster_9": 1.0}, "unknown component 'cluster_9'"),
    ([1.0, 2.0], "2 weights for 3 components"),
    ({"cluster_0": "lots"}, "not a number"),
])
def test_bad_weights_are_one_clear_sentence(store, weights, match):
    data = MixtureDataset(store, natural(store), seq_len=8)
    before = data.live.weights
    with pytest.raises(HFMixtureError, match=match):
        data.live.set_weights(weights)
    assert data.live.weights == before and len(data.live.history) == 1


def test_seq_len_impossible_for_the_data(store):
    # One more token than cluster_2's stream (its documents plus one EOS each) holds.
    too_long = store.num_tokens("cluster_2") + store.num_docs("cluster_2") + 1
    assert too_long < store.num_tokens("cluster_0")
    with pytest.raises(HFMixtureError, match=rf"Component 'cluster_2' holds {too_long - 1} tokens "
                                             rf".* fewer than seq_len={too_long}"):
        MixtureDataset(store, natural(store), seq_len=too_long)
    with pytest.raises(HFMixtureError, match="seq_len must be an integer >= 1"):
        MixtureDataset(store, natural(store), seq_len=0)


def test_a_component_that_matches_nothing(store):
    mixture = Mixture([Component("none", "cluster_id == 99")])
    with pytest.raises(HFMixtureError, match="matches no document"):
        MixtureDataset(store, mixture, seq_len=8)


@pytest.mark.parametrize("change, match", [
    (lambda s: s.update(mixture_fingerprint="0" * 16), "mixture_fingerprint"),
    (lambda s: s.update(store_fingerprint="f" * 16), "store_fingerprint"),
    (lambda s: s.update(seq_len=16), "seq_len=16"),
    (lambda s: s.update(seed=5), "seed=5"),
    (lambda s: s.update(format="other"), "field 'format'"),
    (lambda s: s.update(counts=[1, 2]), "field 'counts'"),
    (lambda s: s.update(sample=3), "not the sum"),
    (lambda s: s.update(history=[]), "field 'history'"),
])
def test_state_from_another_run_is_refused(store, change, match):
    data = MixtureDataset(store, natural(store), seq_len=8)
    data.sampler.choose(10)
    state = data.state_dict()
    change(state)
    fresh = MixtureDataset(store, natural(store), seq_len=8)
    with pytest.raises(HFMixtureError, match=match):
        fresh.load_state_dict(state)
    assert fresh.sampler.sample == 0


def test_state_of_a_run_with_other_stage_placement_is_refused(store):
    names = store.components
    mixture = Mixture([Component(n) for n in names],
                      stages=[Stage(0, {n: 1 for n in names}), Stage(0.5, {n: 1 for n in names})])
    short = MixtureDataset(store, mixture, seq_len=8, total_tokens=8_000)
    longer = MixtureDataset(store, mixture, seq_len=8, total_tokens=16_000)
    with pytest.raises(HFMixtureError, match=r"stage_samples=\[500\].*stage_samples=\[1000\]"):
        longer.load_state_dict(short.state_dict())
    # Without stages the run's length plays no part: a run may be extended.
    extended = MixtureDataset(store, natural(store), seq_len=8, total_tokens=16_000)
    extended.load_state_dict(MixtureDataset(store, natural(store), seq_len=8).state_dict())


def test_state_of_another_mixture_names_the_field(store):
    data = MixtureDataset(store, natural(store), seq_len=8)
    other = MixtureDataset(store, Mixture.from_store(store, "natural"), seq_len=8)
    with pytest.raises(HFMixtureError, match="saved with mixture_fingerprint=.*another run"):
        other.load_state_dict(data.state_dict())


def test_bad_keys_and_loader_arguments(store):
    data = MixtureDataset(store, natural(store), seq_len=8)
    with pytest.raises(HFMixtureError, match="indexed by keys"):
        data[3]
    with pytest.raises(HFMixtureError, match="Unknown component 'nope'"):
        data[("nope", 0)]
    with pytest.raises(HFMixtureError, match="batch_size must be an integer >= 1"):
        MixtureDataLoader(data, batch_size=0)
    with pytest.raises(HFMixtureError, match="rank 2 is outside world_size 2"):
        MixtureDataLoader(data, batch_size=2, rank=2, world_size=2)
    with pytest.raises(HFMixtureError, match="needs a MixtureDataset"):
        MixtureDataLoader([1, 2, 3], batch_size=2)


def test_sampler_state_is_checked_against_its_own_identity(store):
    resolved = natural(store).resolve(store)
    streams = PackedStreams(store, resolved, seq_len=8, seed=0)
    from hf_mixture.mixture.live import LiveMixture

    sampler = MixtureSampler(LiveMixture(streams.names, [1, 1, 1], seq_len=8),
                             streams.seqs_per_epoch, seed=0)
    with pytest.raises(HFMixtureError, match="must be a mapping"):
        sampler.load_state_dict([1, 2])
