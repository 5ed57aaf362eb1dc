"""Trainer pieces shared by the Trainer tests: record what each step trained on, stop early."""

from __future__ import annotations

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback, TrainingArguments

from hf_mixture.formats import TokenStore, TokenStoreWriter
from hf_mixture.mixture import Mixture, MixtureDataset, MixtureTrainer

SEQ_LEN = 16


class Recording(MixtureTrainer):
    """A MixtureTrainer that keeps every training batch's input_ids in ``seen``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[torch.Tensor] = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.seen.append(inputs["input_ids"].detach().cpu().clone())
        return super().training_step(model, inputs, num_items_in_batch)


class StopAt(TrainerCallback):
    """Stop training at the end of optimizer step ``step`` (a checkpointed interruption)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def small_store(path) -> TokenStore:
    """Three components of 30 random documents (vocabulary 300), seeded."""
    rng = np.random.default_rng(0)
    with TokenStoreWriter(path, vocab_size=300, eos_token_id=0, tokenizer_name="test") as w:
        for c in range(3):
            for i in range(30):
                w.add(f"cluster_{c}", "train", rng.integers(1, 300, int(rng.integers(2, 30))),
                      {"cluster_id": c})
    return TokenStore(path)


def small_trainer(store, out, *callbacks, trainer_class=None, max_steps=5, **args):
    """A 30k-parameter Llama on ``store``, checkpointing every 2 steps; returns (trainer, data)."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=store.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ_LEN))
    data = MixtureDataset(store, Mixture.from_store(store, "uniform", seed=3), seq_len=SEQ_LEN)
    targs = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=2,
        gradient_accumulation_steps=2, learning_rate=1e-3, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0, **args)
    trainer = (trainer_class or Recording)(model=model, args=targs, train_dataset=data)
    for cb in callbacks:
        trainer.add_callback(cb)
    return trainer, data
