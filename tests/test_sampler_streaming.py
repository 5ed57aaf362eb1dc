"""The streaming path: datasets streaming sources, tokenized on the fly, same weights/state API."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset

from hf_mixture import playground
from hf_mixture.errors import HFMixtureError
from hf_mixture.mixture import Component, Mixture, MixtureIterableDataset

EOS = 0


def char_ids(text):
    """A transparent tokenizer: one id per character (never EOS)."""
    return [ord(ch) for ch in text]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "tau", "phi"]
    docs = {name: [" ".join(rng.choice(words, int(rng.integers(1, 12)))) for _ in range(n)]
            for name, n in (("json", 40), ("parquet", 30))}
    with open(folder / "a.jsonl", "w") as fh:
        fh.writelines(json.dumps({"text": text, "id": 1}) + "\n" for text in docs["json"])
    pq.write_table(pa.table({"text": docs["parquet"]}), folder / "b.parquet")
    return folder, docs


def sources(files):
    folder, _ = files
    return {"a": load_dataset("json", data_files=str(folder / "a.jsonl"), split="train",
                              streaming=True),
            "b": load_dataset("parquet", data_files=str(folder / "b.parquet"), split="train",
                              streaming=True)}


def make(files, **kwargs):
    kwargs.setdefault("seq_len", 16)
    return MixtureIterableDataset(sources(files), char_ids, eos_token_id=EOS, **kwargs)


def test_sequences_pack_each_source_in_order_with_eos(files):
    _, docs = files
    data = make(files, weights={"a": 1, "b": 1}, seed=4)
    got = {"a": [], "b": []}
    for _ in range(40):
        before = data.counts.copy()
        seq = data.next_sequence()
        got[["a", "b"][int(np.argmax(data.counts - before))]].append(seq)
    for name, key in (("a", "json"), ("b", "parquet")):
        stream = np.concatenate([np.r_[char_ids(t), EOS] for t in docs[key]])
        flat = np.concatenate(got[name])
        n = min(len(flat), len(stream) // 16 * 16)  # within the first epoch
        assert n > 0
        np.testing.assert_array_equal(flat[:n], stream[:n])


def test_resume_is_exact_across_a_weight_change(files):
    def run(stop=None, state=None, n=30):
        data = make(files, weights={"a": 1, "b": 2}, seed=9)
        if state is not None:
            data.load_state_dict(json.loads(state))
        out = []
        for i in range(data.sample, n):
            if i == 5:
                data.live.set_weights({"a": 5, "b": 1}, reason="test")
            out.append(data.next_sequence())
            if stop is not None and i + 1 == stop:
                return out, json.dumps(data.state_dict())
        return out, None

    full, _ = run()
    for stop in (3, 11, 17):
        head, state = run(stop=stop)
        tail, _ = run(state=state)
        assert len(head) + len(tail) == len(full)
        for a, b in zip(head + tail, full):
            np.testing.assert_array_equal(a, b)


def test_epochs_repeat_and_caps_stop(files):
    mixture = Mixture([Component("a", weight=1, max_epochs=2), Component("b", weight=1,
                                                                         max_epochs=1)], seed=1)
    data = make(files, mixture=mixture, seq_len=32)
    seqs = list(data)
    assert data.exhausted.all()
    assert all(s["input_ids"].shape == (32,) for s in seqs)
    state = data.state_dict()
    assert state["sources"]["a"]["epoch"] >= 2 and state["sources"]["b"]["epoch"] >= 1
    # Epoch 1 of "a" is epoch 0 again (unshuffled): its sequences recur.
    a_seqs = {tuple(s["input_ids"].tolist()) for s in seqs}
    assert len(a_seqs) < len(seqs)


def test_real_tokenizer_through_a_dataloader(files):
    tok = playground.tokenizer()
    data = MixtureIterableDataset(sources(files), tok, seq_len=24, weights={"a": 3, "b": 1})
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch["input_ids"].shape == (4, 24) and batch["input_ids"].dtype == torch.int64
    assert torch.equal(batch["input_ids"], batch["labels"])
    assert (batch["input_ids"] == tok.eos_token_id).any()
    with pytest.raises(Exception, match="use num_workers=0"):
        next(iter(torch.utils.data.DataLoader(data, batch_size=2, num_workers=1)))


def test_bad_input(files):
    with pytest.raises(HFMixtureError, match="unknown source 'c'"):
        make(files, weights={"c": 1})
    with pytest.raises(HFMixtureError, match="must be the source names"):
        make(files, mixture=Mixture([Component("b"), Component("a")]))
    data = make(files, weights={"a": 1, "b": 1})
    with pytest.raises(HFMixtureError, match="unknown component 'z'"):
        data.live.set_weights({"z": 1})
    with pytest.raises(HFMixtureError, match="seq_len=8"):
        make(files, seq_len=8).load_state_dict(data.state_dict())
    broken = MixtureIterableDataset(sources(files), char_ids, eos_token_id=EOS, seq_len=8,
                                    text_column="body")
    with pytest.raises(HFMixtureError, match="no text in column 'body'"):
        broken.next_sequence()
