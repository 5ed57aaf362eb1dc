"""Trainer callbacks that adapt a mixture from eval feedback (installed as hf_mixture.callbacks).

Each callback is linked to the run's :class:`~hf_mixture.mixture.LiveMixture`
and changes weights only through ``LiveMixture.set_weights``:

- :class:`ADOCallback` — per-domain power-law fits of loss vs samples (Jiang et al., 2024);
- :class:`DoReMiCallback` — exponentiated gradient on clipped excess loss (Xie et al., 2023):
  the paper's per-token rule against a reference model, or an eval-loss variant;
- :class:`BanditCallback` — EXP3 online data mixing (Albalak et al., 2023);
- :class:`AioliCallback` — LearnParams interventions estimate the groups' interactions,
  an exponentiated-gradient step follows them (Chen et al., 2025);
- :class:`ScheduleCallback` — stages switching at token/step boundaries.

Every adaptive callback takes a ``target`` (``"mean"``, ``"worst"``, a text set, a
callable: the forms of ``hf-mixture search --target``); which forms each rule can use
is in docs/callbacks.md.

:func:`domain_eval_datasets` builds the per-domain held-out sets whose
``eval_<domain>_loss`` the adaptive callbacks read.

>>> from hf_mixture.callbacks import ADOCallback, domain_eval_datasets       # doctest: +SKIP
>>> trainer = MixtureTrainer(model, args, train_dataset=data,
...                          eval_dataset=domain_eval_datasets(store, seq_len=256))  # doctest: +SKIP
>>> ADOCallback(data.live).attach(trainer).train()                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from hf_mixture._lazy import lazy_exports

_EXPORTS = {
    "MixtureCallback": "base",
    "MixtureCallbackConfig": "base",
    "expected_counts": "base",
    "ADOCallback": "ado",
    "ADOConfig": "ado",
    "PowerLaw": "ado",
    "fit_power_law": "ado",
    "ado_preference": "ado",
    "floor_weights": "ado",
    "DoReMiCallback": "doremi",
    "DoReMiConfig": "doremi",
    "doremi_step": "doremi",
    "read_reference_losses": "doremi",
    "save_reference_losses": "doremi",
    "doremi_token_scores": "doremi",
    "BanditCallback": "bandit",
    "BanditConfig": "bandit",
    "exp3_probabilities": "bandit",
    "exp3_update": "bandit",
    "exp3_epsilon": "bandit",
    "AioliCallback": "aioli",
    "AioliConfig": "aioli",
    "AioliSchedule": "aioli",
    "aioli_schedule": "aioli",
    "aioli_step": "aioli",
    "interaction_matrix": "aioli",
    "normalize_interactions": "aioli",
    "sweep_mixture": "aioli",
    "AdaptiveConfig": "base",
    "ScheduleCallback": "schedule",
    "ScheduleConfig": "schedule",
    "domain_eval_datasets": "eval",
    "packed_validation_sequences": "eval",
    "domain_perplexity_path": "eval",
    "eval_fingerprint": "eval",
}

__all__ = list(_EXPORTS) + ["callback_class", "callback_names", "register_callback"]


def _import_all() -> Any:
    """Import every callback module (each registers its callbacks by ``name``); the base module."""
    for module in sorted(set(_EXPORTS.values())):
        importlib.import_module(f"{__name__}.{module}")
    return importlib.import_module(f"{__name__}.base")


def callback_class(name: str) -> type:
    """The callback class registered as ``name`` (``ado``, ``aioli``, ``doremi``, ``bandit``, ``schedule``)."""
    return _import_all().registered_callback(name)


def callback_names() -> list[str]:
    """The names of the registered callbacks, sorted (each class's ``name`` attribute)."""
    return _import_all().callback_names()


def register_callback(cls: type) -> type:
    """Class decorator: register a MixtureCallback subclass by its ``name``; a duplicate is refused."""
    return _import_all().register_callback(cls)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
