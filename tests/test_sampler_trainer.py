"""transformers.Trainer with MixtureTrainer: train, checkpoint, resume -> the identical next samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback, TrainingArguments

from hf_mixture.errors import HFMixtureError
from _trainer_helpers import Recording, StopAt
from hf_mixture.formats.token_store import TokenStore, TokenStoreWriter
from hf_mixture.mixture import Mixture, MixtureDataset
from hf_mixture.mixture.trainer import STATE_FILE

SEQ_LEN = 16


@pytest.fixture(autouse=True)
def one_thread():
    # A 30k-parameter model: OpenMP threads only spin against each other on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("store") / "store"
    with TokenStoreWriter(path, vocab_size=300, eos_token_id=0, tokenizer_name="test") as w:
        for c in range(3):
            for i in range(30):
                w.add(f"cluster_{c}", "train", rng.integers(1, 300, int(rng.integers(2, 30))),
                      {"cluster_id": c})
    return TokenStore(path)


class ChangeWeightsAt(TrainerCallback):
    """A stand-in for an adaptive-mixture callback: new weights after one step."""

    def __init__(self, data, step):
        self.data, self.step = data, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.data.live.set_weights({"cluster_0": 0.1, "cluster_1": 0.1, "cluster_2": 5},
                                       reason="test callback")


def make_trainer(store, out, *callbacks_for):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=store.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ_LEN))
    data = MixtureDataset(store, Mixture.from_store(store, "uniform", seed=3), seq_len=SEQ_LEN)
    args = TrainingArguments(
        output_dir=str(out), max_steps=5, per_device_train_batch_size=2,
        gradient_accumulation_steps=2, learning_rate=1e-3, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0)
    trainer = Recording(model=model, args=args, train_dataset=data)
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
