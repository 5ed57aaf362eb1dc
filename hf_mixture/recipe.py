"""Recipes: the YAML that says what to train, read and checked before anything runs.

A recipe is a YAML file with five sections (see ``recipes/`` and ``docs/training.md``)::

    model:      shape: a registered shape (hf_mixture.models: 62m, llama-3.2-1b, ...) and/or
                LlamaConfig fields overriding it (vocab_size: auto takes the token
                store's), plus attn_implementation (sdpa, eager, flash_attention_2)
    data:       store, mixture, seq_len, eval_sequences, ... (DataConfig)
    training:   TrainingArguments fields, checked against transformers' names, plus
                global_batch_size (sequences per optimizer step over all processes: the
                gradient accumulation is derived from it and the world size)
    callbacks:  [{name: ado, <its config>}, ...]  mixture callbacks by name
    hub:        push, model_repo, mixture_repo, private (HubConfig)

:func:`load_train_config` reads one (``key=value`` overrides applied),
:func:`training_arguments` turns its ``training:`` section into ``TrainingArguments``
and checks what DeepSpeed will be given (its stage and options, the batch over the
ranks) before any process trains.  The run itself is :func:`hf_mixture.train.train`.

>>> cfg = load_train_config("recipes/tiny_cpu.yaml", ["training.max_steps=5"])  # doctest: +SKIP
>>> training_arguments(cfg).max_steps                                         # doctest: +SKIP
5
"""

from __future__ import annotations

import copy
import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import dataclass_from_dict, load_config_file
from .errors import HFMixtureError
from .models import model_fields

# Keys of a recipe file, in the order docs/training.md explains them.
RECIPE_KEYS = ("model", "data", "training", "callbacks", "hub")
# Recipe keys of earlier versions: a recipe-local shape table (now hf_mixture.models).
_OLD_SHAPE_KEYS = ("shape", "shapes")
# The training-section key that is not a TrainingArguments field: the accumulation is
# derived from it (see gradient_accumulation_for).
GLOBAL_BATCH_KEY = "global_batch_size"
# Peak dense bf16 tensor-core FLOP/s, for MFU (vendor data sheets, no sparsity).  A name
# matches its longest key: "H100 PCIe" (756) before "H100" (the SXM part, 989).
PEAK_BF16_FLOPS = {"H100": 989e12, "H100 PCIe": 756e12, "H200": 989e12, "A100": 312e12,
                   "L40S": 362e12, "GH200": 989e12, "B200": 2250e12}


# -- the config --------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Where the training tokens come from (the ``data:`` section)."""

    store: str | None = field(default=None, metadata={
        "help": "Token store folder (made by `hf-mixture tokenize`)."})
    mixture: str | None = field(default=None, metadata={
        "help": "Mixture file (.yaml/.json), a folder holding mixture.yaml, or a Hub dataset id; "
                "default: one component per store component with natural weights."})
    mixture_revision: str | None = field(default=None, metadata={
        "help": "Branch, tag or commit of a Hub mixture repo."})
    seq_len: int = field(default=2048, metadata={
        "help": "Tokens per packed training sequence (documents joined with EOS)."})
    eval_sequences: int = field(default=16, metadata={
        "help": "Validation sequences per mixture component for the per-domain eval "
                "(from the store's validation split); 0 turns the per-domain eval off."})
    total_tokens: int | None = field(default=None, metadata={
        "help": "Run length in tokens, to place stages given as fractions; default "
                "max_steps x global batch x seq_len."})
    seed: int | None = field(default=None, metadata={
        "help": "Sampler seed; default the mixture's seed."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Tokenizer folder or id saved beside the model; default the store's tokenizer "
                "when it loads offline."})

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise HFMixtureError(f"data.seq_len must be >= 1, got {self.seq_len}.")
        if self.eval_sequences < 0:
            raise HFMixtureError(f"data.eval_sequences must be >= 0, got {self.eval_sequences}.")
        if self.total_tokens is not None and self.total_tokens < 1:
            raise HFMixtureError(f"data.total_tokens must be >= 1, got {self.total_tokens}.")


@dataclass
class HubConfig:
    """Publishing the trained model (the ``hub:`` section)."""

    push: bool = field(default=False, metadata={
        "help": "Push the final model with a model card at the end (main process only)."})
    model_repo: str | None = field(default=None, metadata={
        "help": "Hub model repo id to push to (owner/name)."})
    mixture_repo: str | None = field(default=None, metadata={
        "help": "Hub dataset repo of the mixture, named in the model card; default data.mixture "
                "when that is a Hub id."})
    private: bool = field(default=True, metadata={"help": "Create the model repo as private."})
    revision: str | None = field(default=None, metadata={
        "help": "Branch to push to (default: main)."})

    def __post_init__(self) -> None:
        if self.push and not self.model_repo:
            raise HFMixtureError("hub.push is true but hub.model_repo is empty; name the Hub "
                                 "model repo (owner/name) to push to.")


@dataclass
class TrainConfig:
    """A whole recipe: see the module docstring for the sections."""

    model: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "shape: a registered model shape (hf_mixture.models), and LlamaConfig fields "
                "overriding it (+ attn_implementation); vocab_size: auto = the store's."})
    training: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "TrainingArguments fields (transformers' names) and global_batch_size."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Data section."})
    callbacks: list[dict[str, Any]] = field(default_factory=list, metadata={
        "help": "Mixture callbacks: [{name: ado, <config fields>}, ...]."})
    hub: HubConfig = field(default_factory=HubConfig, metadata={"help": "Hub section."})
    source: str | None = field(default=None, metadata={
        "help": "The recipe file this config was read from (set by load_train_config)."})

    def __post_init__(self) -> None:
        model_fields(self.model, where=self.source or "the recipe")   # the shape name is known
        for i, entry in enumerate(self.callbacks):
            if not isinstance(entry.get("name"), str) or not entry["name"]:
                raise HFMixtureError(f"callbacks[{i}] has no field 'name' (e.g. name: ado).")

    @property
    def model_fields(self) -> dict[str, Any]:
        """``model`` with its named shape expanded (the shape's fields, then the overrides)."""
        return model_fields(self.model, where=self.source or "the recipe")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"training.learning_rate=3e-4"`` -> (["training", "learning_rate"], 0.0003).

    Values are read as YAML (``yaml.safe_load``); numbers in exponent form without a
    dot, which YAML 1.1 reads as strings, are read as floats.

    >>> parse_override("model.num_hidden_layers=2")
    (['model', 'num_hidden_layers'], 2)
    >>> parse_override("training.learning_rate=3e-4")
    (['training', 'learning_rate'], 0.0003)
    """
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise HFMixtureError(f"Override {text!r} is not of the form key=value or "
                             "section.key=value (e.g. training.max_steps=100).")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise HFMixtureError(f"Override {text!r}: the value is not valid YAML.") from None
    return key.strip().split("."), _number_or_same(value)


def _number_or_same(value: Any) -> Any:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if value.strip().lower() not in ("nan", "inf", "-inf", "infinity", "+inf"):
            return int(number) if number.is_integer() and "e" not in value.lower() \
                and "." not in value else number
    return value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``key.path=value`` set."""
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        if path[0] not in RECIPE_KEYS:
            raise HFMixtureError(f"Override {text!r} names the unknown section {path[0]!r}; "
                                 f"sections are {', '.join(RECIPE_KEYS)}.")
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise HFMixtureError(f"Override {text!r}: {part!r} is not a section.")
            node = child
        node[path[-1]] = value
    return out


def load_train_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a recipe YAML (``yaml.safe_load``) and apply ``key=value`` overrides.

    >>> cfg = load_train_config("recipes/tiny_cpu.yaml", ["training.max_steps=3"])  # doctest: +SKIP
    """
    raw = load_config_file(path)
    raw = apply_overrides(raw, overrides)
    return config_from_mapping(raw, source=str(path))


def config_from_mapping(raw: Mapping[str, Any], *, source: str | None = None) -> TrainConfig:
    """Validate a recipe mapping (unknown keys and wrong types are named)."""
    if not isinstance(raw, Mapping):
        raise HFMixtureError(f"{source or 'The recipe'} must be a mapping of sections.")
    data = dict(raw)
    for key in _OLD_SHAPE_KEYS:
        # Recipes saved beside earlier models hold `shape: null, shapes: {}`: nothing to migrate.
        if key in data and data[key] in (None, {}):
            data.pop(key)
        elif key in data:
            raise HFMixtureError(f"{source or 'The recipe'}: the section {key!r} is gone; name a "
                                 "registered shape in model.shape (e.g. model: {shape: 62m}) and "
                                 "override its fields beside it.")
    for key in ("model", "training", "data", "hub"):
        if data.get(key) is None:
            data.pop(key, None)
    if data.get("callbacks") is None:
        data.pop("callbacks", None)
    data["source"] = source
    try:
        return dataclass_from_dict(TrainConfig, data, where=source or "the recipe")
    except HFMixtureError as err:
        if source and not str(err).startswith(source):
            raise HFMixtureError(f"{source}: {err}") from None
        raise


# -- training arguments --------------------------------------------------------------------
# What the sampler needs, whatever the recipe says: it restores its exact position from
# the checkpoint (skipping batches would double-skip), and its batches are plain tensors.
_FORCED_ARGS = {"ignore_data_skip": True, "remove_unused_columns": False}
_DEFAULT_ARGS = {"report_to": "none", "save_strategy": "steps", "logging_strategy": "steps"}
# TrainingArguments.optim values that transformers builds from bitsandbytes.
BNB_OPTIMIZERS = ("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
                  "lion_8bit", "lion_32bit", "paged_lion_8bit", "paged_lion_32bit", "ademamix",
                  "ademamix_8bit", "paged_ademamix_8bit", "paged_ademamix_32bit", "rmsprop_bnb",
                  "rmsprop_bnb_8bit", "rmsprop_bnb_32bit")


def gradient_accumulation_for(global_batch: Any, per_device: Any, world_size: int, *,
                              where: str = "the recipe") -> int:
    """Accumulation steps that make ``global_batch`` sequences per optimizer step.

    >>> gradient_accumulation_for(256, 16, 8)
    2
    >>> gradient_accumulation_for(256, 16, 1)
    16
    """
    for key, value in ((GLOBAL_BATCH_KEY, global_batch),
                       ("per_device_train_batch_size", per_device)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HFMixtureError(f"{where}: training.{key} must be an integer >= 1, got {value!r}.")
    per_step = per_device * world_size
    if global_batch % per_step:
        raise HFMixtureError(
            f"{where}: training.global_batch_size {global_batch} is not a multiple of "
            f"per_device_train_batch_size {per_device} x {world_size} process(es) = {per_step}; "
            "change one of them so that the accumulation steps are a whole number.")
    return global_batch // per_step


def _launched_world_size() -> int:
    """Processes of this launch, as torchrun / accelerate launch / the DeepSpeed launcher set it."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def training_arguments(cfg: TrainConfig):
    """``TrainingArguments`` from the ``training:`` section (names checked, numbers coerced).

    ``global_batch_size`` (sequences per optimizer step over all processes) sets
    ``gradient_accumulation_steps`` = global / (per-device batch x world size), so a
    recipe runs unchanged on any number of GPUs; the two keys exclude each other.
    """
    from transformers import TrainingArguments

    where = cfg.source or "the recipe"
    hints = typing.get_type_hints(TrainingArguments)
    names = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    given = dict(cfg.training)
    global_batch = given.pop(GLOBAL_BATCH_KEY, None)
    if global_batch is not None and "gradient_accumulation_steps" in given:
        raise HFMixtureError(f"{where}: training sets both global_batch_size and "
                             "gradient_accumulation_steps; keep global_batch_size (the "
                             "accumulation is derived from it and the number of processes).")
    unknown = sorted(set(given) - names)
    if unknown:
        raise HFMixtureError(f"{where}: training has the unknown key(s) "
                             f"{', '.join(map(repr, unknown))}; use TrainingArguments field names "
                             f"of transformers (e.g. learning_rate, max_steps, lr_scheduler_type).")
    for key, forced in _FORCED_ARGS.items():
        if key in given and given[key] != forced:
            raise HFMixtureError(f"{where}: training.{key} must be {forced} with the mixture "
                                 "sampler (it restores its own position and batches).")
    if not isinstance(given.get("output_dir"), str) or not given["output_dir"]:
        raise HFMixtureError(f"{where}: training.output_dir is not set (or pass --output-dir).")
    steps = given.get("max_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise HFMixtureError(f"{where}: training.max_steps must be an integer >= 1 (the mixture "
                             f"loader has no epochs), got {steps!r}.")
    for key, value in list(given.items()):
        kinds = {hints.get(key), *typing.get_args(hints.get(key))}
        if kinds & {int, float}:
            given[key] = _number_or_same(value)
        elif value is False and bool not in kinds:
            # YAML 1.1 reads an unquoted `no` (eval_strategy: no) as false.
            given[key] = "no"
    optim = str(given.get("optim", ""))
    if optim in BNB_OPTIMIZERS:
        from ._imports import require

        require("bitsandbytes", "bitsandbytes", f"training.optim {optim!r}")
    args = {**_DEFAULT_ARGS, **given, **_FORCED_ARGS}
    world = _launched_world_size()
    if global_batch is not None:
        args["gradient_accumulation_steps"] = gradient_accumulation_for(
            _number_or_same(global_batch), args.get("per_device_train_batch_size", next(
                f.default for f in dataclasses.fields(TrainingArguments)
                if f.name == "per_device_train_batch_size")), world,
            where=where)
    try:
        built = TrainingArguments(**args)
    except (TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HFMixtureError(f"{where}: the training section is not valid TrainingArguments "
                             f"({first})") from None
    if global_batch is not None and int(built.world_size) != world:
        raise HFMixtureError(f"{where}: the launcher's WORLD_SIZE is {world} but the Trainer runs "
                             f"{built.world_size} processes; global_batch_size cannot be split.")
    if getattr(built, "deepspeed_plugin", None) is not None:
        check_deepspeed_config(built, hidden_size=cfg.model_fields.get("hidden_size"), where=where)
    return built


def check_deepspeed_config(args: Any, *, hidden_size: int | None, where: str = "the recipe"
                           ) -> dict[str, Any]:
    """DeepSpeed's own verdict on the run's config, before any process trains.

    The JSON (``training.deepspeed``, or the launcher's ``deepspeed_config_file``) gets its
    ``"auto"`` values from ``args`` as the Trainer will fill them, then DeepSpeed's config
    classes check it: an unknown ZeRO option or stage, or a batch that does not divide
    over the ranks, is one sentence here instead of a traceback in every rank after the
    model is built.  Returns the filled config.
    """
    from types import SimpleNamespace

    from ._imports import require

    require("deepspeed", "deepspeed", "a DeepSpeed launch")
    from deepspeed.runtime.config import DeepSpeedConfig
    from pydantic import ValidationError
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    plugin = args.deepspeed_plugin
    source = args.deepspeed if isinstance(args.deepspeed, str) else os.environ.get(
        "ACCELERATE_DEEPSPEED_CONFIG_FILE", "the DeepSpeed config")
    raw = plugin.deepspeed_config if isinstance(plugin.deepspeed_config, dict) else args.deepspeed
    try:
        filled = HfTrainerDeepSpeedConfig(copy.deepcopy(raw))
        filled.trainer_config_process(args)
        filled.trainer_config_finalize(
            args, SimpleNamespace(config=SimpleNamespace(hidden_size=hidden_size or 1)),
            int(args.max_steps))
        # train_batch_size = micro x accumulation x world size: HfTrainerDeepSpeedConfig set
        # it from args (and refused a JSON value that disagrees); DeepSpeed recomputes it with
        # the world size of its own process group, which does not exist yet, so it is left out
        DeepSpeedConfig({k: v for k, v in filled.config.items() if k != "train_batch_size"})
    except (ValidationError, ValueError, TypeError, KeyError, AssertionError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = "; ".join(lines[:3]) if lines else type(err).__name__
        raise HFMixtureError(f"{where}: DeepSpeed rejects {source} ({detail}).") from None
    return filled.config


def global_batch_size(args: Any) -> int:
    """Sequences per optimizer step over all processes."""
    return (int(args.per_device_train_batch_size) * int(args.gradient_accumulation_steps)
            * max(1, int(args.world_size)))

