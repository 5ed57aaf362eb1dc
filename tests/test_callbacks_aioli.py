"""AioliCallback: the math, the schedule, the target forms, and a simulated linear mixing law."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hf_mixture.callbacks import (
    ADOCallback,
    AioliCallback,
    BanditCallback,
    DoReMiCallback,
    aioli_schedule,
    aioli_step,
    callback_class,
    callback_names,
    interaction_matrix,
    normalize_interactions,
    sweep_mixture,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_mixture.errors import HFMixtureError
from hf_mixture.mixture import LiveMixture

DOMAINS = ["code", "prose", "junk"]


def live3(weights=(1, 1, 1)):
    return LiveMixture(DOMAINS, list(weights), seq_len=8)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.floats(0.55, 1.0), st.integers(0, 10 ** 6))
def test_interaction_matrix_inverts_the_interventions(m, factor, seed):
    a = np.random.default_rng(seed).normal(size=(m + 1, m))     # a target row too
    q = np.stack([sweep_mixture(j, m, factor) for j in range(m)])
    assert np.allclose(interaction_matrix(a @ q.T, factor), a, atol=1e-8)
    assert np.allclose(q.sum(axis=1), 1.0) and np.all(q >= 0)


def test_normalize_and_step_by_hand():
    a = normalize_interactions(np.array([[0.2, -0.2], [0.0, 0.4]]))
    assert a.min() == 0.0 and a.sum() == pytest.approx(1.0)
    assert np.allclose(a, [[0.4 / 1.2, 0.0], [0.2 / 1.2, 0.6 / 1.2]])
    p = aioli_step(np.array([0.5, 0.5]), a, np.ones(2), eta=1.0)
    # column sums 0.5 and 0.5: the mixture stays put
    assert p.tolist() == pytest.approx([0.5, 0.5])
    p = aioli_step(np.array([0.5, 0.5]), a, np.array([1.0, 0.0]), eta=1.0)
    assert p[0] > 0.5                                   # only row 0 counts: group 0 helps it
    assert normalize_interactions(np.zeros((2, 2))).tolist() == [[0.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("max_steps,groups,sweeps", [(1000, 2, 4), (5000, 3, 4), (300, 5, 2),
                                                      (90, 3, 1)])
def test_schedule_fits_the_run_and_keeps_the_fraction(max_steps, groups, sweeps):
    s = aioli_schedule(max_steps=max_steps, start=1, rounds=20, groups=groups, sweeps=sweeps,
                       lp_fraction=0.128, lp_steps=0)
    marks = [step for step in range(max_steps + 1) if s.boundary(step) is not None]
    assert len(marks) == s.rounds * (s.interventions + 1)
    assert max(marks) <= max_steps
    assert s.interventions * s.lp_steps <= s.round_steps * 0.128 + 1e-9 or s.lp_steps == 1
    assert 1 <= s.rounds <= 20
    for t in range(s.rounds):
        begin = 1 + t * s.round_steps
        assert [s.boundary(begin + i * s.lp_steps) for i in range(s.interventions + 1)] == \
            [(t, i) for i in range(s.interventions + 1)]


def test_schedule_refuses_a_run_too_short():
    with pytest.raises(HFMixtureError, match="at least 20 optimizer steps"):
        aioli_schedule(max_steps=10, start=1, rounds=20, groups=5, sweeps=4, lp_fraction=0.128,
                       lp_steps=1)


class LinearLaw:
    """Losses that follow the linear dynamic mixing law with a known A (per step)."""

    def __init__(self, a, start):
        self.a = np.asarray(a, dtype=np.float64)
        self.losses = np.asarray(start, dtype=np.float64)

    def train(self, weights, steps):
        for _ in range(steps):
            self.losses = self.losses - self.a @ np.asarray(weights)


def drive(cb, law, max_steps, rows=None):
    """Train on the live weights step by step; feed the callback at its boundaries."""
    schedule = cb.plan(max_steps)
    for step in range(1, max_steps + 1):
        law.train(cb.live.weights_array, 1)
        if schedule.boundary(step) is not None:
            losses = law.losses[: len(cb.domains)]
            if rows is not None:
                cb.last_target = float(law.losses[rows])
            cb.observe(dict(zip(cb.domains, losses)), step=step)
    return schedule


def test_learn_params_recovers_the_law_and_moves_off_junk():
    # Group 2 is junk: training on it helps nothing and slightly hurts the others.
    a = np.array([[0.010, 0.004, -0.001], [0.003, 0.008, -0.001], [0.0, 0.0, 0.0]])
    cb = AioliCallback(live3(), rounds=4, sweeps=2, lp_steps=2, eta=1.0)
    law = LinearLaw(a, [5.0, 5.0, 5.0])
    schedule = drive(cb, law, 400)
    assert len(cb.matrices) == schedule.rounds == 4
    expected = normalize_interactions(a * schedule.lp_steps)
    assert np.allclose(cb.matrices[0]["A"], expected, atol=1e-9)
    w = cb.live.weights
    assert w["junk"] < 1 / 3 / 2                  # less than half its starting weight
    assert w["code"] > w["junk"] and w["prose"] > w["junk"]
    # the interventions are in the history: every group got the one-hot weight in turn
    learn = [c for c in cb.live.history if "LearnParams" in c.reason]
    assert len(learn) == schedule.rounds * schedule.interventions
    assert all(max(c.weights) == pytest.approx(0.75) for c in learn)
    assert sorted(int(np.argmax(c.weights)) for c in learn[:schedule.interventions]) == \
        [0, 0, 1, 1, 2, 2]


def test_the_step_size_is_the_same_for_every_target():
    # The paper's normalization makes the mean target's column gains sum to 1; dividing by the
    # rows the target reads keeps that for a one-row target (worst, text, callable).
    a = np.random.default_rng(3).normal(size=(4, 3))
    for rows in (np.ones(4), np.array([0.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0])):
        gains = rows @ normalize_interactions(a, rows)
        assert gains.sum() == pytest.approx(1.0) and (gains >= 0).all()
    assert np.allclose(normalize_interactions(a, np.ones(4)), normalize_interactions(a))


def test_targets_choose_the_rows():
    a = np.array([[0.010, 0.0], [0.0, 0.002], [0.0, 0.009]])   # row 2: the target
    for target, winner in [("mean", "a"), ("worst", "b")]:
        cb = AioliCallback(LiveMixture(["a", "b"], [1, 1], seq_len=8), rounds=2, sweeps=1,
                           lp_steps=2, eta=1.0, target=target)
        drive(cb, LinearLaw(a[:2], [3.0, 4.0]), 60)
        assert max(cb.weights, key=cb.weights.get) == winner, target

    def score(model, tokenizer):           # a callable target: its own row of A
        return 0.0

    cb = AioliCallback(LiveMixture(["a", "b"], [1, 1], seq_len=8), rounds=2, sweeps=1,
                       lp_steps=2, eta=1.0, target=score)
    assert cb.target_kind == "callable" and cb.target_fn is score
    drive(cb, LinearLaw(a, [3.0, 3.0, 3.0]), 60, rows=2)
    assert cb.weights["b"] > 0.5           # b is what lowers the target
    assert cb.eval_history[-1]["target"] == pytest.approx(cb.last_target)


def test_restricted_setting_starts_from_the_given_mixture_and_ema_anchors_there():
    a = np.array([[0.01, 0.0], [0.0, 0.01]])
    cb = AioliCallback(LiveMixture(["a", "b"], [0.8, 0.2], seq_len=8), rounds=3, sweeps=1,
                       lp_steps=1, eta=1.0, ema=0.1)
    assert cb.prior.tolist() == pytest.approx([0.8, 0.2])
    drive(cb, LinearLaw(a, [3.0, 3.0]), 60)
    # equal interactions: exp(eta * equal gains) leaves p^0 where it was
    assert cb.weights["a"] == pytest.approx(0.8)


def test_a_missing_evaluation_drops_the_round(caplog):
    cb = AioliCallback(LiveMixture(["a", "b"], [1, 1], seq_len=8), rounds=2, sweeps=1,
                       lp_steps=2)
    s = cb.plan(100)
    cb.observe({"a": 3.0, "b": 3.0}, step=s.start)
    assert cb.in_learn_params and max(cb.live.weights_array) == pytest.approx(0.75)
    cb.observe({"a": 2.0, "b": 2.0}, step=s.start + 2 * s.lp_steps)   # step +lp missed
    assert not cb.in_learn_params and cb.live.weights_array.tolist() == pytest.approx([.5, .5])
    assert "dropped" in caplog.text


def test_registry_recipe_dict_and_bad_config():
    assert "aioli" in callback_names() and callback_class("aioli") is AioliCallback
    cb = callback_class("aioli")(live3(), config={"target": "worst", "rounds": 5, "eta": "1e-1"})
    assert cb.config.rounds == 5 and cb.config.eta == 0.1 and cb.target_kind == "worst"
    with pytest.raises(HFMixtureError, match="one_hot_factor"):
        AioliCallback(live3(), one_hot_factor=0.3)
    with pytest.raises(HFMixtureError, match="rounds"):
        AioliCallback(live3(), rounds=0)
    with pytest.raises(HFMixtureError, match="at least 2 groups"):
        AioliCallback(LiveMixture(["x"], [1], seq_len=8))
    with pytest.raises(HFMixtureError, match="target must be"):
        AioliCallback(live3(), target="")


@pytest.mark.parametrize("cls,extra", [(ADOCallback, {}), (BanditCallback, {}),
                                       (DoReMiCallback, {"reference_losses": {d: 1.0 for d in DOMAINS}})])
def test_rules_without_per_domain_attribution_refuse_other_targets(cls, extra):
    cls(live3(), **extra, target="mean")
    with pytest.raises(HFMixtureError, match="cannot optimize the target 'data/x.jsonl'.*aioli"):
        cls(live3(), **extra, target="data/x.jsonl")


def test_text_target_is_tokenized_before_training_and_bad_ones_are_one_sentence(
        tiny_store, tmp_path):
    from hf_mixture.mixture import Mixture, MixtureDataset

    data = MixtureDataset(tiny_store, Mixture.from_store(tiny_store, "uniform"), seq_len=16)
    good = tmp_path / "target.jsonl"
    good.write_text("\n".join(json.dumps({"text": f"def f{i}(x): return x + {i}"})
                              for i in range(40)))
    cb = AioliCallback(data, target=str(good), rounds=2, sweeps=1)
    assert cb.target_rows is not None and cb.target_rows.shape[1] == 16
    assert len(cb.target_eval_dataset()) == len(cb.target_rows)
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": "  "}) + "\n")
    (tmp_path / "notext.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    for bad, match in [(tmp_path / "missing.jsonl", "is not a readable"),
                       (tmp_path / "empty.jsonl", "no usable text"),
                       (tmp_path / "notext.jsonl", "no column 'text'")]:
        with pytest.raises(HFMixtureError, match=match):
            AioliCallback(data, target=str(bad))


def test_state_round_trip_mid_learn_params(tmp_path):
    a = np.array([[0.01, 0.002, 0.0], [0.001, 0.01, 0.0], [0.0, 0.0, 0.0]])
    full = AioliCallback(live3(), rounds=3, sweeps=2, lp_steps=1, eta=1.0)
    law = LinearLaw(a, [4.0, 4.0, 4.0])
    schedule = full.plan(200)
    resumed = None
    for step in range(1, 201):
        law.train(full.live.weights_array, 1)
        if schedule.boundary(step) is None:
            continue
        losses = dict(zip(DOMAINS, law.losses))
        full.observe(losses, step=step)
        if resumed is not None:
            resumed.observe(losses, step=step)
            assert resumed.live.weights_array.tolist() == full.live.weights_array.tolist()
        if step == schedule.start + 3 * schedule.lp_steps:       # inside the first LearnParams
            ckpt = tmp_path / "checkpoint-x"
            ckpt.mkdir()
            full.save_checkpoint(ckpt)
            resumed = AioliCallback(live3(), rounds=3, sweeps=2, lp_steps=1, eta=1.0)
            resumed.load_checkpoint(ckpt)
            assert resumed.in_learn_params
    assert resumed.state_dict()["rule"] == full.state_dict()["rule"]


def test_on_step_end_asks_for_the_evaluations(tmp_path):
    cb = AioliCallback(live3(), rounds=2, sweeps=1, lp_steps=2)
    args = TrainingArguments(str(tmp_path), max_steps=60, report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 60
    cb.on_train_begin(args, state, control)
    asked = []
    for step in range(1, 61):
        state.global_step = step
        control = TrainerControl()
        cb.on_step_end(args, state, control)
        if control.should_evaluate:
            asked.append(step)
    assert asked == [s for s in range(61) if cb.schedule.boundary(s) is not None]
    assert len(asked) == cb.schedule.rounds * (cb.schedule.interventions + 1)


def test_target_forms_are_read_by_the_one_module():
    from hf_mixture.mixture.target import target_kind
    from hf_mixture.search.target import target_kind as search_kind

    assert search_kind is target_kind
    assert [target_kind(t) for t in ("mean", "worst", "os.path:join", "x.jsonl", "<in-process>")
            ] == ["mean", "worst", "callable", "text", "callable"]
    cb = AioliCallback(live3(), target=lambda model, tok: 1.0)
    assert cb.config.target == "<in-process>" and cb.target_kind == "callable"
    with pytest.raises(HFMixtureError, match="cannot be imported"):
        AioliCallback(live3(), target="no_such_module_xyz:f")


def test_one_run_has_one_text_target(tiny_store, tmp_path):
    from types import SimpleNamespace

    from hf_mixture.mixture import Mixture, MixtureDataset

    data = MixtureDataset(tiny_store, Mixture.from_store(tiny_store, "uniform"), seq_len=16)
    files = []
    for i in range(2):
        f = tmp_path / f"t{i}.jsonl"
        f.write_text("\n".join(json.dumps({"text": f"text {i} number {j} " * 3})
                               for j in range(30)))
        files.append(f)
    trainer = SimpleNamespace(eval_dataset={"a": None}, callback_handler=SimpleNamespace(
        callbacks=[]))
    first = AioliCallback(data, target=str(files[0]))
    first.attach(trainer)
    assert set(trainer.eval_dataset) == {"a", "target"}
    AioliCallback(data, target=str(files[0])).attach(trainer)      # the same target: fine
    with pytest.raises(HFMixtureError, match="one run has one target"):
        AioliCallback(data, target=str(files[1])).attach(trainer)
