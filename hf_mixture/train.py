"""One training entry point: a recipe YAML -> model, mixture data, callbacks -> Trainer.

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

:func:`train` builds the model from its config (no weights are downloaded), the
mixture dataset over the token store (the resumable sampler), the per-domain
validation sets and the named callbacks, trains with ``transformers.Trainer``
under whatever ``accelerate launch`` set up (DDP, DeepSpeed), evaluates per
domain, saves, and pushes the model with a card when ``hub.push`` is set (main
process only).

>>> cfg = load_train_config("recipes/tiny_cpu.yaml", ["data.store=store", "training.max_steps=5"])  # doctest: +SKIP
>>> result = train(cfg)                                                                        # doctest: +SKIP
>>> sorted(result.metrics)                                                                     # doctest: +SKIP
['eval_cluster_0_loss', ...]

The launch line of every recipe is the first line of its file, e.g.::

    accelerate launch --config_file recipes/accelerate/1gpu.yaml -m hf_mixture train \\
        recipes/pretrain_1b.yaml --store STORE --mixture MIXTURE
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import dataclass_from_dict, load_config_file
from .errors import HFMixtureError
from .models import build_model, count_parameters, model_fields

logger = logging.getLogger(__name__)

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


# -- the model (built by hf_mixture.models) ----------------------------------------------
def model_flops_per_token(config: Any, seq_len: int) -> float:
    """Training FLOPs per token: ``6 N + 12 L H S`` (PaLM, appendix B).

    ``N`` counts the matmul parameters (every layer and the LM head; the input
    embedding lookup does no FLOPs), ``L`` layers, ``H`` the attention width
    (heads x head dim), ``S`` the sequence length (the attention scores).

    >>> from transformers import LlamaConfig
    >>> c = LlamaConfig(vocab_size=100, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
    ...                 num_attention_heads=2, num_key_value_heads=1)
    >>> model_flops_per_token(c, seq_len=4)   # 6 * (layer 576 + head 800) + 12 * 1 * 8 * 4
    8640.0
    """
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = config.num_key_value_heads or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2          # q, o and k, v
    mlp = 3 * h * config.intermediate_size                            # gate, up, down
    n = config.num_hidden_layers * (attn + mlp) + h * config.vocab_size  # + LM head
    return float(6 * n + 12 * config.num_hidden_layers * heads * head_dim * seq_len)


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
    return built


def global_batch_size(args: Any) -> int:
    """Sequences per optimizer step over all processes."""
    return (int(args.per_device_train_batch_size) * int(args.gradient_accumulation_steps)
            * max(1, int(args.world_size)))


# -- throughput ------------------------------------------------------------------------------
class _TimedIterator:
    """Wraps the Trainer's batch iterator and adds the time spent waiting in ``next``."""

    def __init__(self, iterator: Iterator, sink: Any):  # sink: a ThroughputCallback
        self.iterator = iterator
        self.sink = sink

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.sink.data_seconds += time.perf_counter() - start


def _throughput_callback_class():
    from transformers import TrainerCallback

    class ThroughputCallback(TrainerCallback):
        """Tokens/s, MFU and the share of time spent waiting for data, logged as ``perf/*``.

        ``data_seconds`` is the time the training loop spent inside ``next(batches)``
        (the trainer adds to it); the share is over the time between the first and the
        last optimizer step.  On a GPU the loop runs ahead of the device, so this is
        an upper bound on the time the device waits for data.
        """

        def __init__(self, *, flops_per_token: float, tokens_per_step: int,
                     peak_flops: float | None, output_dir: str | None = None,
                     warmup_steps: int = 2):
            self.flops_per_token = flops_per_token
            self.tokens_per_step = tokens_per_step
            self.peak_flops = peak_flops
            self.output_dir = output_dir
            self.warmup_steps = warmup_steps  # the first steps pay for allocation and warm-up
            self.data_seconds = 0.0
            self.world_size = 1
            self._first = 0
            self._t0: float | None = None
            self._d0 = 0.0
            self._s0 = 0
            self.summary: dict[str, Any] = {}

        def _sync(self) -> None:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t0 is None and state.global_step >= self._first + self.warmup_steps:
                self._sync()
                self._t0, self._d0, self._s0 = (time.perf_counter(), self.data_seconds,
                                                state.global_step)

        def measure(self, state) -> dict[str, Any]:
            if self._t0 is None or state.global_step <= self._s0:
                return {}
            self._sync()
            elapsed = time.perf_counter() - self._t0
            steps = state.global_step - self._s0
            tokens_per_second = steps * self.tokens_per_step / elapsed
            out = {"perf/tokens_per_second": tokens_per_second,
                   "perf/step_seconds": elapsed / steps,
                   "perf/data_wait_fraction": (self.data_seconds - self._d0) / elapsed}
            if self.peak_flops:
                out["perf/mfu"] = (tokens_per_second * self.flops_per_token
                                   / (self.peak_flops * self.world_size))
            return out

        def on_train_begin(self, args, state, control, **kwargs):
            self.world_size = max(1, int(args.world_size))
            self._first = int(state.global_step)   # a resumed run starts counting here

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "loss" in logs:
                logs.update(self.measure(state))

        def on_train_end(self, args, state, control, **kwargs):
            self.summary = {**self.measure(state), "measured_steps": state.global_step - self._s0,
                            "warmup_steps": self.warmup_steps,
                            "flops_per_token": self.flops_per_token,
                            "tokens_per_step": self.tokens_per_step,
                            "peak_flops_per_device": self.peak_flops,
                            "world_size": int(args.world_size)}
            if self.output_dir and state.is_world_process_zero:
                from ._io import atomic_write_json

                atomic_write_json(Path(self.output_dir) / "throughput.json", self.summary)

    return ThroughputCallback


def peak_flops_for_name(name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU by its device name, or None when it is not known.

    >>> peak_flops_for_name("NVIDIA H100 80GB HBM3"), peak_flops_for_name("NVIDIA H100 PCIe")
    (989000000000000.0, 756000000000000.0)
    >>> peak_flops_for_name("cpu") is None
    True
    """
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


def peak_flops_for_device() -> float | None:
    """The bf16 peak of the local GPU by its name (``HF_MIXTURE_PEAK_FLOPS`` overrides), or None."""
    env = os.environ.get("HF_MIXTURE_PEAK_FLOPS")
    if env:
        return float(env)
    import torch

    if not torch.cuda.is_available():
        return None
    return peak_flops_for_name(torch.cuda.get_device_name())


# -- callbacks by name ------------------------------------------------------------------------
def build_callbacks(entries: Sequence[Mapping[str, Any]], live: Any, *, where: str = "the recipe"
                    ) -> list[Any]:
    """Instantiate ``[{name: ado, <config>}, ...]`` against the run's live mixture."""
    if not entries:
        return []
    from .callbacks import callback_class

    out = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        name = entry.pop("name")
        try:
            cls = callback_class(name)
            out.append(cls(live, config=entry))
        except HFMixtureError as err:
            raise HFMixtureError(f"{where}: callbacks[{i}]: {err}") from None
    return out


# -- the run -----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` leaves behind (also written into ``output_dir``)."""

    output_dir: str
    metrics: dict[str, float]
    num_parameters: int
    global_step: int
    weights_history: list[dict[str, Any]]
    throughput: dict[str, Any]
    optimizer: str = ""
    world_size: int = 1
    pushed: str | None = None


def _trainer_class():
    """The sampler-aware Trainer: ours from hf_mixture.mixture, with a timed batch iterator."""
    from .mixture.trainer import MixtureTrainer

    class RecipeTrainer(MixtureTrainer):
        throughput: Any = None

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            if self.throughput is not None:
                epoch_iterator = _TimedIterator(epoch_iterator, self.throughput)
            return super().get_batch_samples(epoch_iterator, num_batches, device)

    return RecipeTrainer


def resolve_mixture(cfg: TrainConfig, store: Any):
    """The run's mixture: ``data.mixture`` (file, folder or Hub id) or natural store weights."""
    from .mixture import Mixture

    if cfg.data.mixture is None:
        return Mixture.from_store(store, "natural", seed=cfg.data.seed or 0)
    from .hub import load_mixture

    return load_mixture(cfg.data.mixture, revision=cfg.data.mixture_revision)


def _is_main_process() -> bool:
    from .hub import is_main_process

    return is_main_process()


def train(cfg: TrainConfig, *, extra_callbacks: Sequence[Callable[[Any], Any]] = ()
          ) -> TrainResult:
    """Run a recipe (call it under ``accelerate launch`` or ``torchrun`` for several processes).

    ``extra_callbacks``: functions of the run's :class:`~hf_mixture.mixture.LiveMixture`
    that return a ``TrainerCallback``, added after the recipe's callbacks — for code
    that steers or watches a recipe run from Python (the live mixture exists only once
    the run has built its dataset).

    >>> train(load_train_config("recipes/tiny_cpu.yaml", ["data.store=store"]))  # doctest: +SKIP
    """
    from .formats.token_store import TokenStore
    from .mixture import MixtureDataset

    where = cfg.source or "the recipe"
    if not cfg.data.store:
        raise HFMixtureError(f"{where}: data.store is not set; pass --store STORE (a token store "
                             "made by `hf-mixture tokenize`).")
    args = training_arguments(cfg)     # before the model: DeepSpeed ZeRO-3 builds it sharded
    store = TokenStore(cfg.data.store)
    if cfg.data.tokenizer:  # checked before training, not after: see _save_tokenizer
        from .formats.tokenizers import check_tokenizer_matches, load_tokenizer

        check_tokenizer_matches(load_tokenizer(cfg.data.tokenizer), store,
                                "saved beside the model")
    mixture = resolve_mixture(cfg, store)
    seq_len = cfg.data.seq_len
    tokens_per_step = global_batch_size(args) * seq_len
    total_tokens = cfg.data.total_tokens or args.max_steps * tokens_per_step
    seed = mixture.seed if cfg.data.seed is None else cfg.data.seed
    train_data = MixtureDataset(store, mixture, seq_len=seq_len, total_tokens=total_tokens,
                                seed=seed)
    eval_data = {}
    if cfg.data.eval_sequences:
        from .callbacks import domain_eval_datasets

        # One held-out set per mixture component: Trainer.evaluate then reports
        # eval_<component>_loss, which the mixture callbacks read.
        eval_data = domain_eval_datasets(store, mixture, seq_len=seq_len,
                                         max_sequences=cfg.data.eval_sequences)
    model = build_model(cfg.model, vocab_size=store.vocab_size, eos_token_id=store.eos_token_id,
                        seed=args.seed, where=where)
    num_parameters = count_parameters(model)
    if args.process_index == 0:
        logger.info("Model: %s parameters; mixture %s over %s; %d tokens per optimizer step.",
                    f"{num_parameters:,}", mixture.fingerprint, store.path, tokens_per_step)

    throughput = _throughput_callback_class()(
        flops_per_token=model_flops_per_token(model.config, seq_len),
        tokens_per_step=tokens_per_step, peak_flops=peak_flops_for_device(),
        output_dir=args.output_dir)
    trainer_cls = _trainer_class()
    trainer = trainer_cls(model=model, args=args, train_dataset=train_data,
                          eval_dataset=eval_data or None, callbacks=[throughput])
    trainer.throughput = throughput
    # The dataset, not only its live weights: a text target is tokenized with the store's
    # tokenizer when its callback is created (before training), and attach() adds its eval set.
    callbacks = build_callbacks(cfg.callbacks, train_data, where=where)
    if callbacks and not eval_data and any(getattr(c, "target_kind", "mean") != "mean"
                                           for c in callbacks):
        raise HFMixtureError(f"{where}: a callback has a target but data.eval_sequences is 0, "
                             "so nothing would be evaluated; set data.eval_sequences.")
    for callback in callbacks:
        callback.attach(trainer)
    for make in extra_callbacks:
        trainer.add_callback(make(train_data.live))

    resume = args.resume_from_checkpoint
    if resume in ("latest", "last", "true", "True"):
        from .mixture.trainer import last_complete_checkpoint

        resume = last_complete_checkpoint(args.output_dir)
        if resume is None:
            raise HFMixtureError(f"resume_from_checkpoint is 'latest' but {args.output_dir} holds "
                                 "no checkpoint-<step> folder.")
    trainer.train(resume_from_checkpoint=resume)

    metrics: dict[str, float] = {}
    if eval_data:
        metrics = {k: float(v) for k, v in trainer.evaluate().items()}
        for name in eval_data:
            loss = metrics.get(f"eval_{name}_loss")
            if loss is not None and math.isfinite(loss):
                metrics[f"eval_{name}_perplexity"] = float(math.exp(min(loss, 50.0)))
        metrics.update(_target_metrics(callbacks, metrics, eval_data, trainer, store))
    trainer.save_model(args.output_dir)   # every rank: DeepSpeed ZeRO-3 gathers the weights
    history = [c.to_dict() for c in train_data.live.history]
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # unwrap accelerate's
    bits = getattr(getattr(optimizer, "args", None), "optim_bits", None)   # bitsandbytes' setting
    result = TrainResult(output_dir=args.output_dir, metrics=metrics,
                         num_parameters=num_parameters, global_step=trainer.state.global_step,
                         weights_history=history, throughput=dict(throughput.summary),
                         optimizer=f"{type(optimizer).__module__}.{type(optimizer).__name__}"
                                   + (f" ({bits}-bit states)" if bits else ""),
                         world_size=int(args.world_size))
    if trainer.is_world_process_zero():
        _write_run_files(cfg, result, mixture, store)
    trainer.accelerator.wait_for_everyone()
    if cfg.hub.push:
        result.pushed = _push(cfg, result, mixture)
    trainer.accelerator.wait_for_everyone()
    return result


def _target_metrics(callbacks: Sequence[Any], metrics: Mapping[str, float], eval_data: Any,
                    trainer: Any, store: Any) -> dict[str, float]:
    """``eval_target_loss`` (and its perplexity) of the first adaptive callback's target.

    A text target was evaluated by the Trainer (its eval set is ``target``); ``mean`` and
    ``worst`` come from the per-domain losses; a callable is called once more on the model.
    """
    adaptive = [c for c in callbacks if hasattr(c, "target_kind")]
    if not adaptive:
        return {}
    cb = adaptive[0]
    out: dict[str, float] = {}
    if cb.target_kind == "text":
        value = metrics.get("eval_target_loss")
    elif cb.target_kind == "callable":
        from .mixture.target import store_tokenizer

        try:
            tok = store_tokenizer(store, None)
        except HFMixtureError:
            tok = None
        value = cb._call_target(trainer.model, tok)
    else:
        losses = [metrics.get(f"eval_{name}_loss") for name in eval_data if name != "target"]
        losses = [v for v in losses if v is not None]
        value = (max(losses) if cb.target_kind == "worst" else sum(losses) / len(losses)) \
            if losses else None
    if value is not None and math.isfinite(value):
        out["eval_target_loss"] = float(value)
        out["eval_target_perplexity"] = float(math.exp(min(value, 50.0)))
    return out


def _write_run_files(cfg: TrainConfig, result: TrainResult, mixture: Any, store: Any) -> None:
    """Beside the weights: the mixture, its weights history, the recipe and the metrics."""
    import yaml

    from ._io import atomic_write_json, atomic_write_text

    out = Path(result.output_dir)
    mixture.save(out / "mixture.yaml")
    atomic_write_json(out / "mixture_history.json", result.weights_history)
    atomic_write_json(out / "eval_results.json", result.metrics)
    recipe = cfg.to_dict()
    header = f"# Recipe as run (from {Path(cfg.source).name})\n" if cfg.source else ""
    atomic_write_text(out / "recipe.yaml", header + yaml.safe_dump(recipe, sort_keys=False))
    facts = {"num_parameters": result.num_parameters, "global_step": result.global_step,
             "optimizer": result.optimizer, "world_size": result.world_size,
             "mixture_fingerprint": mixture.fingerprint, "store_fingerprint": store.fingerprint,
             "store_source": store.manifest.get("source"),
             "tokenizer": store.manifest.get("tokenizer")}
    atomic_write_json(out / "run_info.json", facts)
    _save_tokenizer(cfg, store, out)


def _save_tokenizer(cfg: TrainConfig, store: Any, out: Path) -> None:
    name = cfg.data.tokenizer or store.tokenizer_name
    if not name:
        logger.warning("The token store names no tokenizer; %s holds none.", out)
        return
    from .formats.tokenizers import check_tokenizer_matches, load_tokenizer

    try:
        tokenizer = load_tokenizer(name)
    except HFMixtureError as err:
        if cfg.data.tokenizer:  # asked for explicitly: not loadable is the user's error
            raise
        logger.warning("The model folder %s holds no tokenizer (%s); set data.tokenizer to "
                       "save one beside the weights.", out, err)
        return
    # a model trained on one vocabulary shipped with another tokenizer is silently broken
    check_tokenizer_matches(tokenizer, store, "saved beside the model")
    tokenizer.save_pretrained(str(out))


def _push(cfg: TrainConfig, result: TrainResult, mixture: Any) -> str | None:
    from .hub import push_model_to_hub

    if not _is_main_process():
        return None
    mixture_repo = cfg.hub.mixture_repo
    if mixture_repo is None and cfg.data.mixture and not Path(cfg.data.mixture).exists():
        mixture_repo = cfg.data.mixture
    recipe_text = Path(cfg.source).read_text(encoding="utf-8") if cfg.source else None
    return push_model_to_hub(result.output_dir, cfg.hub.model_repo, mixture=mixture,
                             mixture_repo=mixture_repo, recipe_name=cfg.source,
                             recipe_text=recipe_text, metrics=result.metrics,
                             private=cfg.hub.private, revision=cfg.hub.revision)
