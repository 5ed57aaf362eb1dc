"""transformers.Trainer with MixtureTrainer: train, checkpoint, resume -> the identical next samples."""

from __future__ import annotations

import json

import pytest
import torch
from _trainer_helpers import StopAt, small_store, small_trainer
from transformers import TrainerCallback

from hf_mixture.errors import HFMixtureError
from hf_mixture.mixture.trainer import STATE_FILE


@pytest.fixture(autouse=True)
def one_thread():
    # A 30k-parameter model: OpenMP threads only spin against each other on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_store(tmp_path_factory.mktemp("store") / "store")


class ChangeWeightsAt(TrainerCallback):
    """A stand-in for an adaptive-mixture callback: new weights after one step."""

    def __init__(self, data, step):
        self.data, self.step = data, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.data.live.set_weights({"cluster_0": 0.1, "cluster_1": 0.1, "cluster_2": 5},
                                       reason="test callback")


def make_trainer(store, out, *callbacks_for):
    trainer, data = small_trainer(store, out)
    trainer.add_callback(ChangeWeightsAt(data, 1))
    for cb in callbacks_for:
        trainer.add_callback(cb)
    return trainer, data


def test_trainer_resume_continues_with_identical_samples(store, tmp_path):
    full, full_data = make_trainer(store, tmp_path / "full")
    full.train()
    assert len(full.seen) == 10  # 5 steps x 2 accumulated batches

    part, _ = make_trainer(store, tmp_path / "part", StopAt(2))
    part.train()
    assert len(part.seen) == 4
    checkpoint = tmp_path / "part" / "checkpoint-2"
    state = json.loads((checkpoint / STATE_FILE).read_text())
    assert state["sample"] == 2 * 2 * 2  # steps x accumulation x batch size
    assert [c["reason"] for c in state["history"]] == ["initial", "test callback"]

    resumed, resumed_data = make_trainer(store, tmp_path / "part")
    resumed.train(resume_from_checkpoint=True)
    assert len(resumed.seen) == 6
    for a, b in zip(part.seen + resumed.seen, full.seen):
        assert torch.equal(a, b)
    # The model sees the same data and restored RNG/optimizer: the same losses.
    losses = {e["step"]: e["loss"] for e in full.state.log_history if "loss" in e}
    again = {e["step"]: e["loss"] for e in resumed.state.log_history if "loss" in e}
    for step in (3, 4, 5):
        assert again[step] == pytest.approx(losses[step], rel=1e-4)
    assert resumed_data.state_dict() == full_data.state_dict()
    # The weight change after step 1 took effect from step 2's batches on.
    assert resumed_data.live.history[1].sample == 4


def test_resume_from_a_checkpoint_without_sampler_state(store, tmp_path):
    trainer, _ = make_trainer(store, tmp_path / "run", StopAt(2))
    trainer.train()
    (tmp_path / "run" / "checkpoint-2" / STATE_FILE).unlink()
    again, _ = make_trainer(store, tmp_path / "run")
    with pytest.raises(HFMixtureError, match=f"holds no {STATE_FILE}"):
        again.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
