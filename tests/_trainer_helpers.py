"""Trainer pieces shared by the Trainer tests: record what each step trained on, stop early."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from hf_mixture.mixture import MixtureTrainer


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
