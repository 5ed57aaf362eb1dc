"""Live weights: one method changes them, the change applies at the next batch with any workers."""

from __future__ import annotations

import numpy as np
import pytest

from hf_mixture.errors import HFMixtureError
from hf_mixture.formats.token_store import TokenStore, TokenStoreWriter
from hf_mixture.mixture import (
    Component,
    LiveMixture,
    Mixture,
    MixtureDataLoader,
    MixtureDataset,
    Stage,
)
from hf_mixture.mixture.sampler import choose_components, counter_uniform

SEQ_LEN = 8
BATCH = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("store") / "store"
    with TokenStoreWriter(path, vocab_size=500, eos_token_id=0, tokenizer_name="test") as w:
        for c in range(3):
            for _ in range(60):
                w.add(f"cluster_{c}", "train", rng.integers(1, 500, int(rng.integers(1, 30))),
                      {"cluster_id": c})
    return TokenStore(path)


def dataset(store, **kwargs):
    return MixtureDataset(store, Mixture.from_store(store, "uniform", seed=11), seq_len=SEQ_LEN,
                          **kwargs)


def run(store, num_workers, changes, n_batches, **loader_kwargs):
    """Batches and their keys; ``changes`` = {after batch i: weights}."""
    data = dataset(store)
    loader = MixtureDataLoader(data, batch_size=BATCH, num_workers=num_workers, **loader_kwargs)
    batches, keys = [], []
    for i, batch in enumerate(loader):
        batches.append(batch["input_ids"].clone())
        keys.append(loader.last_keys)
        if i in changes:
            data.live.set_weights(changes[i], reason=f"after batch {i}")
        if i + 1 == n_batches:
            break
    return batches, keys, loader, data


# -- the LiveMixture object ------------------------------------------------------------------
def test_live_mixture_records_every_change():
    live = LiveMixture(["a", "b", "c"], {"a": 1, "b": 1, "c": 2}, seq_len=10)
    assert live.weights == {"a": 0.25, "b": 0.25, "c": 0.5}
    live.advance(35)  # 4 samples handed out (ceil(35 / 10))
    change = live.set_weights({"a": 3, "b": 1}, reason="more a")
    assert change.sample == 4 and change.tokens == 40 and change.weights == (0.75, 0.25, 0.0)
    assert live.weights_array.tolist() == [0.75, 0.25, 0.0]
    live.set_weights(np.array([0, 0, 7.0]))
    assert [(c.sample, c.reason) for c in live.history] == [
        (0, "initial"), (4, "more a"), (4, "set_weights")]
    assert "c=1.000" in repr(live)


def test_stages_apply_through_the_same_recording_path():
    mixture = Mixture([Component("a"), Component("b")],
                      stages=[Stage(0, {"a": 1, "b": 0}), Stage(25, {"a": 1, "b": 1}, name="mix"),
                              Stage(0.5, {"a": 0, "b": 1})])
    live = LiveMixture.from_mixture(mixture, seq_len=10, total_tokens=100)
    # A stage starting at token T applies from sample ceil(T / seq_len).
    assert [(s.sample, s.stage) for s in live.stages] == [(3, 1), (5, 2)]
    assert live.weights == {"a": 1.0, "b": 0.0} and live.stage == 0
    live.advance(30)
    assert live.stage == 1 and live.weights == {"a": 0.5, "b": 0.5}
    live.advance(1000)
    assert live.stage == 2 and live.weights == {"a": 0.0, "b": 1.0}
    assert [(c.sample, c.reason) for c in live.history] == [
        (0, "initial"), (3, "stage 1 (mix)"), (5, "stage 2")]
    with pytest.raises(HFMixtureError, match="pass total_tokens"):
        LiveMixture.from_mixture(mixture, seq_len=10)


def test_advance_belongs_to_the_sampler_once_attached(store):
    data = dataset(store)
    with pytest.raises(HFMixtureError, match="advance\\(\\) is for a LiveMixture used alone"):
        data.live.advance(100)
    with pytest.raises(HFMixtureError, match="tokens_seen must be an integer >= 0"):
        LiveMixture(["a"], [1], seq_len=2).advance(-1)
    with pytest.raises(HFMixtureError, match="seq_len must be an integer >= 1"):
        LiveMixture(["a"], [1], seq_len=0)


# -- a change applies at the next batch ------------------------------------------------------
def expected_keys(seed, segments, n):
    """Keys (component, k) of samples 0..n-1 under weight segments [(from_sample, weights)]."""
    counts = np.zeros(3, dtype=np.int64)
    out = []
    for s in range(n):
        w = [w for start, w in segments if start <= s][-1]
        c = int(choose_components(counter_uniform(seed, s, 1), np.asarray(w, dtype=float))[0])
        out.append((c, int(counts[c])))
        counts[c] += 1
    return out


def test_change_applies_from_the_next_batch_without_workers(store):
    new = {"cluster_0": 0.0, "cluster_1": 1.0, "cluster_2": 3.0}
    _, keys, _, data = run(store, 0, {3: new}, 8)
    got = [(int(c), int(k)) for b in keys for c, k in zip(b.comps, b.ks)]
    want = expected_keys(11, [(0, [1, 1, 1]), (4 * BATCH, [0, 1, 3])], 8 * BATCH)
    assert got == want
    assert all(c != 0 for b in keys[4:] for c in b.comps)  # weight 0: never drawn again
    assert data.live.history[-1].sample == 4 * BATCH


def test_a_change_reaches_worker_processes(store):
    """Prefetched batches decided under old weights are replaced: same batches as 0 workers."""
    changes = {2: {"cluster_0": 5, "cluster_1": 0, "cluster_2": 1},
               3: [1, 1, 0],   # two changes in a row, the second before any new batch is drawn
               9: {"cluster_2": 1}}
    ref, ref_keys, _, _ = run(store, 0, changes, 14)
    got, got_keys, loader, data = run(store, 2, changes, 14, prefetch_factor=2)
    assert loader.rematerialized > 0  # the workers had prefetched stale batches
    for a, b in zip(got, ref):
        assert np.array_equal(a, b)
    for a, b in zip(got_keys, ref_keys):
        assert np.array_equal(a.comps, b.comps) and np.array_equal(a.ks, b.ks)
    assert all(set(k.comps.tolist()) <= {2} for k in got_keys[10:])
    # A second pass of the same loader continues after the last batch the loop received.
    state = data.state_dict()
    assert state["sample"] == 14 * BATCH
    more = next(iter(loader))["input_ids"]
    again = dataset(store)
    again.load_state_dict(state)
    assert np.array_equal(more, next(iter(MixtureDataLoader(again, batch_size=BATCH)))["input_ids"])


def test_persistent_workers_continue_across_iterators(store):
    data = dataset(store)
    loader = MixtureDataLoader(data, batch_size=BATCH, num_workers=2, persistent_workers=True)
    first = [b["input_ids"] for _, b in zip(range(3), loader)]
    data.live.set_weights([0, 0, 1])
    second = [b["input_ids"] for _, b in zip(range(3), loader)]
    ref, _, _, _ = run(store, 0, {2: [0, 0, 1]}, 6)
    for a, b in zip(first + second, ref):
        assert np.array_equal(a, b)


def test_a_change_that_leaves_nothing_to_draw_ends_the_loader(store):
    mixture = Mixture([Component("cluster_0", weight=1, max_epochs=0.2),
                       Component("cluster_1", weight=1)], seed=2)
    data = MixtureDataset(store, mixture, seq_len=SEQ_LEN)
    loader = MixtureDataLoader(data, batch_size=BATCH, num_workers=2)
    keys = []
    for i, _ in enumerate(loader):
        keys.append(loader.last_keys)
        if i == 1:
            data.live.set_weights({"cluster_0": 1})  # capped: the run ends at its cap
    assert len(keys) > 3
    assert set(np.concatenate([k.comps for k in keys[2:]]).tolist()) == {0}
    counts, caps = data.sampler.counts, data.sampler.caps
    assert caps[0] - BATCH < counts[0] <= caps[0]  # no partial batch at the end
    assert len(keys) * BATCH == counts.sum()
