"""Mixture callbacks inside a real transformers.Trainer with a tiny from-scratch Llama.

Three synthetic domains with very different learnability (a counting pattern, a
two-token alternation, uniform noise) so that per-domain eval losses move apart
within a few steps.  Runs on CPU in seconds.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from _trainer_helpers import Recording, StopAt
from hf_mixture.callbacks import (
    ADOCallback,
    AioliCallback,
    BanditCallback,
    DoReMiCallback,
    ScheduleCallback,
    domain_eval_datasets,
)
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from hf_mixture.formats.token_store import TokenStore, TokenStoreWriter
from hf_mixture.mixture import Mixture, MixtureDataset, Stage

VOCAB, EOS, SEQ_LEN = 96, 0, 32
DOMAINS = ["counting", "noise", "pairs"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("cb_store") / "store"
    with TokenStoreWriter(path, vocab_size=VOCAB, eos_token_id=EOS, tokenizer_name="t") as w:
        for split, n in (("train", 60), ("validation", 10)):
            for i in range(n):
                length = int(rng.integers(30, 80))
                start = int(rng.integers(1, 30))
                w.add("counting", split, (np.arange(start, start + length) % 30) + 1, {"doc": i})
                w.add("noise", split, rng.integers(31, 63, length), {"doc": i})
                a = int(rng.integers(63, 96))
                w.add("pairs", split, np.tile([a, 63 + (a - 63 + 5) % 33], length // 2),
                      {"doc": i})
    return TokenStore(path)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matrices: with 2 threads on a busy machine torch spends its time spinning.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(store, out, make_callback, *, max_steps=12, eval_steps=3, save_steps=6, stop_at=None,
        mixture="uniform"):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ_LEN))
    data = MixtureDataset(store, Mixture.from_store(store, mixture, seed=1), seq_len=SEQ_LEN)
    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=8,
        per_device_eval_batch_size=8, learning_rate=3e-3, eval_strategy="steps",
        eval_steps=eval_steps, logging_steps=eval_steps, save_strategy="steps",
        save_steps=save_steps, report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    evals = domain_eval_datasets(store, seq_len=SEQ_LEN, max_sequences=8)
    trainer = Recording(model=model, args=args, train_dataset=data, eval_dataset=evals)
    callback = make_callback(data)
    callback.attach(trainer)
    if stop_at is not None:
        trainer.add_callback(StopAt(stop_at))
    return trainer, data, callback


def test_ado_in_trainer_logs_weights_and_adapts(store, tmp_path):
    trainer, data, cb = run(store, tmp_path / "ado", lambda d: ADOCallback(d, min_points=3,
                                                                     fit_from_step=0))
    trainer.train()
    logs = trainer.state.log_history
    train_logs = [e for e in logs if "loss" in e]
    assert train_logs and all(f"mixture/{d}" in e for e in train_logs for d in DOMAINS)
    assert all(f"eval_{d}_loss" in " ".join(map(str, logs)) for d in DOMAINS)
    # four evaluations, updates from the third on (min_points=3)
    assert [c.reason for c in data.live.history] == [
        "initial", "ado: step 9", "ado: step 12"]
    assert len(cb.eval_history) == 4
    final = data.live.weights
    assert final != pytest.approx({d: 1 / 3 for d in DOMAINS})
    # the counting domain is learned fastest, noise cannot be learned
    assert final["counting"] > final["noise"]
    # step 12 was logged before its evaluation: it shows the weights set at step 9
    assert train_logs[-1]["mixture/counting"] == pytest.approx(data.live.history[1].weights[0])
    saved = json.loads(cb.state_file(tmp_path / "ado" / "checkpoint-12").read_text())
    assert saved["weights"] == pytest.approx(list(data.live.weights_array))
    assert cb.seconds < 0.5


def test_resume_gives_identical_weights_and_next_samples(store, tmp_path):
    def make(d):
        return ADOCallback(d, min_points=3, fit_from_step=0)   # the default waits 500 steps

    full, full_data, full_cb = run(store, tmp_path / "full", make)
    full.train()
    part, _, _ = run(store, tmp_path / "part", make, stop_at=6)
    part.train()
    assert (tmp_path / "part" / "checkpoint-6" / "hf_mixture_ado.json").is_file()

    # The checkpoint moved outside the new run's output_dir: the callback still finds its state.
    moved = tmp_path / "moved" / "ckpt"
    shutil.copytree(tmp_path / "part" / "checkpoint-6", moved)
    resumed, data, cb = run(store, tmp_path / "resumed", make)
    resumed.train(resume_from_checkpoint=str(moved))
    assert len(part.seen) == 6 and len(resumed.seen) == 6
    for a, b in zip(part.seen + resumed.seen, full.seen):
        assert torch.equal(a, b)
    # CPU training is deterministic and the Trainer restores model, optimizer and RNG:
    # the same eval losses, so the same fits and exactly the same weights history.
    assert [c.to_dict() for c in data.live.history] == \
        [c.to_dict() for c in full_data.live.history]
    assert cb.state_dict()["rule"] == full_cb.state_dict()["rule"]
    assert cb.eval_history == full_cb.eval_history


@pytest.mark.parametrize("make", [
    lambda d: DoReMiCallback(d, {"counting": 1.0, "noise": 3.4, "pairs": 1.0}),
    lambda d: BanditCallback(d),
], ids=["doremi", "bandit"])
def test_doremi_and_bandit_in_trainer(store, tmp_path, make):
    trainer, data, cb = run(store, tmp_path / "run", make, max_steps=6, save_steps=6)
    trainer.train()
    assert cb.updates == 2 and len(data.live.history) == 3
    assert data.live.weights != pytest.approx({d: 1 / 3 for d in DOMAINS})
    assert "mixture/pairs" in trainer.state.log_history[-2]
    assert (tmp_path / "run" / "checkpoint-6" / f"hf_mixture_{cb.name}.json").is_file()


def test_schedule_switches_at_a_step_boundary(store, tmp_path):
    stages = [Stage(0, {"counting": 1, "noise": 0, "pairs": 0}),
              Stage(3, {"counting": 0, "noise": 1, "pairs": 0}, name="noise")]
    trainer, data, _ = run(store, tmp_path / "sched",
                            lambda d: ScheduleCallback(d, stages, unit="steps"),
                            max_steps=5, eval_steps=100, save_steps=100)
    trainer.train()
    tokens = [b[b != EOS] for b in trainer.seen]
    assert all(bool((t <= 30).all()) for t in tokens[:3])              # counting ids 1..30
    assert all(bool(((t >= 31) & (t <= 62)).all()) for t in tokens[3:])  # noise ids 31..62
    assert data.live.history[-1].reason == "schedule: stage 1 (noise) at steps 3"
    assert trainer.state.log_history[0]["mixture/stage"] == 1.0


# -- per-domain training losses and non-finite eval batches (issue 17) ---------------------------
def _reference_model(tmp_path):
    torch.manual_seed(1)
    ref = LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ_LEN))
    ref.save_pretrained(tmp_path / "ref")
    return str(tmp_path / "ref")


@pytest.mark.parametrize("kind", ["ado", "bandit", "doremi"])
def test_training_loss_rules_in_trainer(store, tmp_path, kind):
    def make(d):
        if kind == "ado":
            return ADOCallback(d, loss="train", train_every=1, min_points=3, fit_from_step=0)
        if kind == "bandit":
            return BanditCallback(d, feedback="train")
        return DoReMiCallback(d, reference_model=_reference_model(tmp_path))

    trainer, data, cb = run(store, tmp_path / "run", make, max_steps=6, save_steps=6)
    trainer.train()
    assert cb.wants_token_losses
    # one update per step (ADO: from its third point on); eval losses are not used
    assert cb.updates == (4 if kind == "ado" else 6)
    assert data.live.weights != pytest.approx({d: 1 / 3 for d in DOMAINS})
    if kind == "ado":
        assert len(cb.eval_history) == 6 and all(e["step"] == i + 1
                                                 for i, e in enumerate(cb.eval_history))
    if kind == "doremi":
        assert cb.steps == 6 and (cb.scores >= 0).all()
    # the batches of the loop itself never carry component ids into the model
    assert all(b.shape == (8, SEQ_LEN) for b in trainer.seen)


def test_nan_in_one_domains_eval_batch_is_caught(store, tmp_path, caplog):
    """transformers' logging_nan_inf_filter drops the NaN batch from the mean; we do not."""
    trainer, data, cb = run(store, tmp_path / "nan", lambda d: BanditCallback(d), max_steps=3,
                            eval_steps=3, save_steps=100)
    poison = 95                                        # a 'pairs' token id
    with torch.no_grad():
        trainer.model.model.embed_tokens.weight[poison] = float("nan")
    evals = dict(trainer.eval_dataset)
    rows = [[t if t != poison else 1 for t in r] for r in evals["pairs"]["input_ids"]]
    rows[0][5] = poison                                # one NaN batch of the 'pairs' domain
    import datasets

    evals["pairs"] = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})
    trainer.eval_dataset = evals
    trainer.args.per_device_eval_batch_size = 4        # two eval batches: one NaN, one fine
    # the poisoned row must not enter training: no 'pairs' sample contains it then
    data.live.set_weights({"counting": 1, "noise": 1, "pairs": 0})
    trainer.train()
    metrics = [e for e in trainer.state.log_history if "eval_pairs_loss" in e]
    assert metrics and np.isfinite(metrics[-1]["eval_pairs_loss"])   # the filtered mean
    assert metrics[-1]["eval_pairs_nonfinite_batches"] == 1
    assert cb.skipped == 1 and cb.updates == 0
    assert "non-finite eval loss for 'pairs'" in caplog.text


def _aioli(d):
    # two rounds of 3 one-step interventions in 12 steps (lp_fraction 0.5 makes them fit)
    return AioliCallback(d, rounds=2, sweeps=1, lp_steps=1, lp_fraction=0.5, eta=1.0)


def test_aioli_in_trainer_intervenes_then_steps(store, tmp_path):
    trainer, data, cb = run(store, tmp_path / "aioli", _aioli)
    trainer.train()
    s = cb.schedule
    assert (s.rounds, s.round_steps, s.interventions) == (2, 6, 3)
    # the evaluations it asked for (1-4, 7-10) and the Trainer's own (every 3 steps)
    assert [e["step"] for e in cb.eval_history] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 12]
    reasons = [c.reason for c in data.live.history]
    assert sum("LearnParams" in r for r in reasons) == 6
    assert [r for r in reasons if r.endswith(("round 0", "round 1"))] == [
        "aioli: step 4: round 0", "aioli: step 10: round 1"]
    assert len(cb.matrices) == 2 and np.asarray(cb.matrices[0]["A"]).shape == (3, 3)
    # noise cannot be learned: training on it lowers no loss, so it loses weight
    assert data.live.weights["noise"] < 1 / 3
    assert cb.seconds < 0.5


def test_aioli_resume_mid_learn_params_is_identical(store, tmp_path):
    full, full_data, full_cb = run(store, tmp_path / "full", _aioli, save_steps=4)
    full.train()
    part, _, _ = run(store, tmp_path / "part", _aioli, save_steps=4, stop_at=8)
    part.train()
    assert json.loads((tmp_path / "part" / "checkpoint-8" / "hf_mixture_aioli.json").read_text()
                      )["rule"]["expect"] == [1, 2]       # saved inside round 1's LearnParams
    resumed, data, cb = run(store, tmp_path / "resumed", _aioli, save_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-8"))
    for a, b in zip(part.seen + resumed.seen, full.seen):
        assert torch.equal(a, b)
    assert [c.to_dict() for c in data.live.history] == \
        [c.to_dict() for c in full_data.live.history]
    assert cb.state_dict()["rule"] == full_cb.state_dict()["rule"]
