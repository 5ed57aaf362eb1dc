"""Training with a plain ``transformers.Trainer``: a small mixin and a checkpoint callback.

What the mixin changes, and why (transformers 5.x):

- ``get_train_dataloader`` returns a :class:`MixtureDataLoader` that is already
  rank-aware.  The stock path wraps a DataLoader in ``accelerator.prepare``,
  which would re-shard our batches across ranks (dropping samples) and rebuild
  the loader without our weight-change handling.  The Trainer still moves each
  batch to the device itself (``_prepare_inputs``).
- ``train(resume_from_checkpoint=...)`` restores the sampler state saved in the
  checkpoint (O(1): a few numbers) and sets ``args.ignore_data_skip = True``:
  the stock resume would replay and drop every batch of the interrupted epoch
  through ``accelerate.skip_first_batches``, which rebuilds the DataLoader.

:class:`MixtureStateCallback` (added by the mixin) writes the state as JSON
into every checkpoint from the main process only.  All ranks hold the same
global state, so all read that one file on resume.

>>> from transformers import TrainingArguments
>>> from hf_mixture.mixture import MixtureDataset, MixtureTrainer
>>> data = MixtureDataset("store", "mixture.yaml", seq_len=1024)               # doctest: +SKIP
>>> trainer = MixtureTrainer(model=model, train_dataset=data,
...                          args=TrainingArguments("out", max_steps=1000, save_steps=100))  # doctest: +SKIP
>>> trainer.train()                                                              # doctest: +SKIP
>>> trainer.train(resume_from_checkpoint=True)   # exact continuation            # doctest: +SKIP

Use the mixin with another Trainer subclass: ``class MyTrainer(MixtureTrainerMixin, SFTTrainer)``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .._io import atomic_write_json
from ..errors import HFMixtureError
from .dataset import MixtureDataLoader, MixtureDataset

logger = logging.getLogger(__name__)

STATE_FILE = "hf_mixture_sampler.json"


def save_sampler_state(dataset: MixtureDataset, checkpoint_dir: str | os.PathLike) -> Path:
    """Write ``dataset``'s sampler state into ``checkpoint_dir`` (atomically)."""
    return atomic_write_json(Path(checkpoint_dir) / STATE_FILE, dataset.state_dict())


def load_sampler_state(dataset: MixtureDataset, checkpoint_dir: str | os.PathLike) -> None:
    """Restore the sampler state saved in ``checkpoint_dir`` into ``dataset``."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        raise HFMixtureError(f"Checkpoint '{checkpoint_dir}' holds no {STATE_FILE}: it was saved "
                             "without MixtureStateCallback, so its data position is unknown.")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HFMixtureError(f"{path} is not valid JSON ({err}).") from None
    dataset.sampler.load_state_dict(state, where=str(path))


class MixtureStateCallback(TrainerCallback):
    """Save the sampler state into every checkpoint (main process only).

    >>> trainer.add_callback(MixtureStateCallback(data))   # doctest: +SKIP
    """

    def __init__(self, dataset: MixtureDataset):
        self.dataset = dataset

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir():
            save_sampler_state(self.dataset, folder)


class MixtureTrainerMixin:
    """Makes a ``Trainer`` (subclass) train on a :class:`MixtureDataset` exactly and resumably.

    Put it first in the bases: ``class MyTrainer(MixtureTrainerMixin, Trainer)``.
    Other ``train_dataset`` types go through the stock code paths untouched.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._add_state_callback()

    def _add_state_callback(self) -> None:
        if not isinstance(self.train_dataset, MixtureDataset):
            return
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, MixtureStateCallback):
                cb.dataset = self.train_dataset
                return
        self.add_callback(MixtureStateCallback(self.train_dataset))

    def get_train_dataloader(self):
        if not isinstance(self.train_dataset, MixtureDataset):
            return super().get_train_dataloader()
        args = self.args
        workers = args.dataloader_num_workers
        return MixtureDataLoader(
            self.train_dataset, batch_size=self._train_batch_size, num_workers=workers,
            rank=args.process_index, world_size=args.world_size,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=bool(args.dataloader_persistent_workers) and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        if not isinstance(self.train_dataset, MixtureDataset):
            return super().train(resume_from_checkpoint, *args, **kwargs)
        self._add_state_callback()
        # The sampler state replaces the stock resume's replay-and-drop of batches.
        self.args.ignore_data_skip = True
        if resume_from_checkpoint is True or (isinstance(resume_from_checkpoint, bool)
                                              and resume_from_checkpoint):
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise HFMixtureError(f"resume_from_checkpoint=True, but output_dir "
                                     f"'{self.args.output_dir}' holds no checkpoint.")
        if resume_from_checkpoint:
            # Callbacks find their own checkpoint state through args (they never see this call).
            self.args.resume_from_checkpoint = str(resume_from_checkpoint)
            load_sampler_state(self.train_dataset, resume_from_checkpoint)
            logger.info("Resumed the mixture sampler at sample %d from %s.",
                        self.train_dataset.sampler.sample, resume_from_checkpoint)
        return super().train(resume_from_checkpoint or None, *args, **kwargs)


class MixtureTrainer(MixtureTrainerMixin, Trainer):
    """``transformers.Trainer`` with :class:`MixtureTrainerMixin`."""
