"""Mixtures: what to train on (declarative), and the sampler that trains on it.

Names are imported lazily, so the CLI and DataLoader workers that need one
part do not import torch or transformers for the others:

>>> from hf_mixture.mixture import Mixture, MixtureDataset, MixtureDataLoader  # doctest: +SKIP
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    # the declarative mixture
    "Mixture": "mixture",
    "Component": "mixture",
    "Stage": "mixture",
    "ResolvedComponent": "mixture",
    "normalize_weights": "mixture",
    # live weights
    "LiveMixture": "live",
    "WeightChange": "live",
    # sampling decisions and packed sequences (numpy only)
    "MixtureSampler": "sampler",
    "PackedStreams": "sampler",
    "BatchKeys": "sampler",
    "counter_uniform": "sampler",
    "choose_components": "sampler",
    # torch
    "MixtureDataset": "dataset",
    "MixtureDataLoader": "dataset",
    "MixtureIterableDataset": "streaming",
    # what a search or a callback optimizes (one target module for both)
    "TargetSpec": "target",
    "prepare_target": "target",
    "tokenize_target": "target",
    "target_kind": "target",
    # transformers.Trainer
    "MixtureTrainer": "trainer",
    "MixtureTrainerMixin": "trainer",
    "MixtureStateCallback": "trainer",
}

__all__ = [
    "BatchKeys",
    "Component",
    "LiveMixture",
    "Mixture",
    "MixtureDataLoader",
    "MixtureDataset",
    "MixtureIterableDataset",
    "MixtureSampler",
    "MixtureStateCallback",
    "MixtureTrainer",
    "MixtureTrainerMixin",
    "PackedStreams",
    "ResolvedComponent",
    "Stage",
    "TargetSpec",
    "WeightChange",
    "choose_components",
    "counter_uniform",
    "normalize_weights",
    "prepare_target",
    "target_kind",
    "tokenize_target",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
