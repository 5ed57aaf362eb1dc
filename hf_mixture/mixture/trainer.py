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

- ``compute_loss``: when a callback sets ``wants_token_losses`` (ADO or the
  bandit on training losses, DoReMi's per-token rule), the batches carry
  ``component_ids``; the loss is the stock one, and the per-token losses of each
  micro-batch (detached) go to the callback's ``on_token_losses``.
- ``evaluation_loop`` counts the eval batches whose loss is NaN/inf and reports
  ``<prefix>_nonfinite_batches`` when there are any: transformers'
  ``logging_nan_inf_filter`` (on by default) drops them from the mean, so a
  half-diverged evaluation would otherwise look finite.

Use the mixin with another Trainer subclass: ``class MyTrainer(MixtureTrainerMixin, SFTTrainer)``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

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


# The small files of a checkpoint that the Trainer reads with torch.load(weights_only=True):
# read once before anything is resumed, so a refused one is our sentence, not a traceback
# from inside the training loop.  (optimizer.pt is large: it is checked as it loads.)
_TORCH_FILES = ("rng_state*.pth", "scheduler.pt", "scaler.pt")


def _torch_load_refusal(path: Path, err: BaseException) -> HFMixtureError:
    first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
    return HFMixtureError(
        f"Checkpoint file '{path}' cannot be loaded safely: it holds something other than "
        f"tensors and plain values, or is corrupt ({first[:200]}); resume from another "
        "checkpoint.")


def check_checkpoint_files(checkpoint_dir: str | os.PathLike) -> None:
    """Load each small torch file of a checkpoint as the Trainer will (``weights_only``), and
    refuse a pickle payload or a corrupt file in one sentence naming it."""
    from transformers.trainer_pt_utils import safe_globals

    folder = Path(checkpoint_dir)
    for pattern in _TORCH_FILES:
        for path in sorted(folder.glob(pattern)):
            try:
                with safe_globals():
                    torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError...
                raise _torch_load_refusal(path, err) from None


def _checkpoint_complete(folder: Path) -> str | None:
    """``None`` when ``folder`` is a complete checkpoint, else what it lacks."""
    if not (folder / "trainer_state.json").is_file():
        return "no trainer_state.json (the save was interrupted)"
    if not (folder / STATE_FILE).is_file():
        return f"no {STATE_FILE}"
    weights = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
               "pytorch_model.bin.index.json", "adapter_model.safetensors")
    if not any((folder / w).is_file() for w in weights) and not any(folder.glob("global_step*")):
        return "no model weights"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` of ``output_dir`` that is complete; skipped ones are logged.

    A run killed while saving leaves its newest checkpoint half-written; resuming from it
    would fail (or worse, resume wrongly), while the one before is intact.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        name = p.name
        if p.is_dir() and name.startswith(PREFIX_CHECKPOINT_DIR + "-") and \
                name.rsplit("-", 1)[-1].isdigit():
            found.append((int(name.rsplit("-", 1)[-1]), p))
    for _, folder in sorted(found, reverse=True):
        missing = _checkpoint_complete(folder)
        if missing is None:
            return str(folder)
        logger.warning("Skipping %s: it is incomplete (%s).", folder, missing)
    return None


def token_losses(logits: Any, labels: Any, ignore_index: int = -100) -> tuple[Any, Any]:
    """Per-token next-token cross-entropy ``(B, T-1)`` and its mask, as a causal LM computes it.

    Position ``t`` predicts ``labels[:, t + 1]``; tokens labelled ``ignore_index``
    are masked (loss 0).

    >>> import torch
    >>> loss, mask = token_losses(torch.zeros(1, 3, 4), torch.tensor([[1, 2, -100]]))
    >>> [round(x, 4) for x in loss[0].tolist()], mask[0].tolist()
    ([1.3863, 0.0], [True, False])
    """
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    mask = shift_labels != ignore_index
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                           shift_labels.reshape(-1), ignore_index=ignore_index, reduction="none")
    return loss.view(shift_labels.shape), mask


class MixtureStateCallback(TrainerCallback):
    """Save the sampler state into every checkpoint (the processes that save it).

    >>> trainer.add_callback(MixtureStateCallback(data))   # doctest: +SKIP
    """

    writes_checkpoint_state = True  # MixtureTrainer writes it before the checkpoint completes

    def __init__(self, dataset: MixtureDataset):
        self.dataset = dataset

    def on_save(self, args, state, control, **kwargs):
        # Written where the Trainer writes its checkpoint: the main process, or each
        # node's local main process with save_on_each_node=True (no shared filesystem).
        if not args.should_save:
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

    def _save_rng_state(self, output_dir):
        # Crash safety: the Trainer writes trainer_state.json and then deletes old checkpoints
        # (save_total_limit) *before* callbacks' on_save.  Writing the sampler and callback
        # state here -- inside the checkpoint, before trainer_state.json -- makes
        # trainer_state.json the last file of a checkpoint: a checkpoint that has it is
        # complete, and rotation never removes the last complete one for an incomplete one.
        super()._save_rng_state(output_dir)
        if isinstance(self.train_dataset, MixtureDataset):
            for cb in self.callback_handler.callbacks:
                if getattr(cb, "writes_checkpoint_state", False):
                    cb.on_save(self.args, self.state, self.control)

    def _load_optimizer_and_scheduler(self, checkpoint):
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        except (HFMixtureError, KeyboardInterrupt):
            raise
        except Exception as err:  # a refused or corrupt optimizer.pt; anything else re-raised
            import pickle

            if checkpoint is None or not isinstance(err, (pickle.UnpicklingError, EOFError)):
                raise
            raise _torch_load_refusal(Path(checkpoint) / "optimizer.pt", err) from None

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
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
            component_ids=bool(self._token_loss_listeners()))

    def _token_loss_listeners(self) -> list[Any]:
        """The callbacks that read per-domain training losses (``wants_token_losses``)."""
        return [cb for cb in self.callback_handler.callbacks
                if getattr(cb, "wants_token_losses", False)]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        component_ids = inputs.pop("component_ids", None)
        listeners = self._token_loss_listeners() if component_ids is not None else []
        if not listeners or not model.training or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        labels = inputs["labels"]          # the stock path may pop it
        batch = dict(inputs)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        with torch.no_grad():
            per_token, mask = token_losses(logits.detach(), labels)
        for cb in listeners:
            cb.on_token_losses(per_token, mask, component_ids, inputs=batch, model=model)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        out = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        loss = out[0]
        if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            self._nonfinite_eval_batches = getattr(self, "_nonfinite_eval_batches", 0) + 1
        return out

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None,
                        ignore_keys=None, metric_key_prefix="eval"):
        self._nonfinite_eval_batches = 0
        output = super().evaluation_loop(dataloader, description,
                                         prediction_loss_only=prediction_loss_only,
                                         ignore_keys=ignore_keys,
                                         metric_key_prefix=metric_key_prefix)
        bad = _sum_over_ranks(self._nonfinite_eval_batches, self.args.device)
        if bad:
            output.metrics[f"{metric_key_prefix}_nonfinite_batches"] = bad
        return output

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        if not isinstance(self.train_dataset, MixtureDataset):
            return super().train(resume_from_checkpoint, *args, **kwargs)
        self._add_state_callback()
        # The sampler state replaces the stock resume's replay-and-drop of batches.
        self.args.ignore_data_skip = True
        if resume_from_checkpoint is True or (isinstance(resume_from_checkpoint, bool)
                                              and resume_from_checkpoint):
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise HFMixtureError(f"resume_from_checkpoint=True, but output_dir "
                                     f"'{self.args.output_dir}' holds no checkpoint.")
        if resume_from_checkpoint:
            # Callbacks find their own checkpoint state through args (they never see this call).
            self.args.resume_from_checkpoint = str(resume_from_checkpoint)
            check_checkpoint_files(resume_from_checkpoint)
            load_sampler_state(self.train_dataset, resume_from_checkpoint)
            logger.info("Resumed the mixture sampler at sample %d from %s.",
                        self.train_dataset.sampler.sample, resume_from_checkpoint)
        return super().train(resume_from_checkpoint or None, *args, **kwargs)


def _sum_over_ranks(count: int, device: Any) -> int:
    """``count`` summed over the ranks (every rank evaluates, so all call this)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return int(count)
    if "nccl" not in str(dist.get_backend()).lower():
        device = "cpu"
    tensor = torch.tensor([int(count)], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return int(tensor.item())


class MixtureTrainer(MixtureTrainerMixin, Trainer):
    """``transformers.Trainer`` with :class:`MixtureTrainerMixin`."""
