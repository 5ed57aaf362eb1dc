"""``hf-mixture train``: run a training recipe (under ``accelerate launch`` for several GPUs).

    accelerate launch --config_file recipes/accelerate/1gpu.yaml -m hf_mixture train \\
        recipes/pretrain_1b.yaml --store STORE --mixture MIXTURE [key=value ...]

Overrides are ``section.key=value`` (values read as YAML), e.g.
``training.max_steps=200 training.activation_checkpointing=true model.shape=350m``; the
flags (:class:`TrainCommand` and one per ``data:`` field) are shortcuts for the common
ones, and ``--config FILE.yaml`` holds the same flag names.  ``--dry-run`` prints the
resolved recipe and the model's parameter count (built on the meta device) and
trains nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field

from .recipe import DataConfig


@dataclass
class TrainCommand:
    """The recipe, its overrides, and shortcuts for common overrides."""

    recipe: str = field(metadata={"positional": True, "metavar": "RECIPE",
                                  "help": "Recipe YAML (recipes/*.yaml)."})
    overrides: list[str] = field(default_factory=list, metadata={
        "positional": True, "metavar": "KEY=VALUE",
        "help": "Recipe overrides, e.g. training.max_steps=100 model.shape=350m."})
    output_dir: str | None = field(default=None, metadata={
        "help": "Shortcut for training.output_dir=..."})
    max_steps: int | None = field(default=None, metadata={
        "help": "Shortcut for training.max_steps=..."})
    shape: str | None = field(default=None, metadata={
        "help": "Shortcut for model.shape=... (a registered model shape)."})
    resume: str | None = field(default=None, metadata={
        "nargs": "?", "const": "latest", "metavar": "CHECKPOINT",
        "help": "Resume from a checkpoint folder, or the latest one in output_dir."})
    push_to_hub: str | None = field(default=None, metadata={
        "metavar": "REPO_ID",
        "help": "Push the final model with a card to this Hub repo (hub.push)."})
    dry_run: bool = field(default=False, metadata={
        "help": "Print the resolved recipe and parameter count; do not train."})


def _data_flags() -> type:
    """``DataConfig``'s fields as flags that default to the recipe's value (None: not given)."""
    hints = typing.get_type_hints(DataConfig)
    return dataclasses.make_dataclass("DataFlags", [
        (f.name, hints[f.name] | None, field(default=None, metadata=f.metadata))
        for f in dataclasses.fields(DataConfig)])


# --store, --mixture, --seq-len, ... : the data section's fields, each a `data.<name>=` override.
DataFlags = _data_flags()


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", dataclass_types=[TrainCommand, DataFlags], intermixed=True,
        help="Train a model on a mixture from a recipe YAML (run under accelerate launch).",
        description="Build the model from the recipe (no weights download), the mixture dataset "
                    "over a token store and the recipe's callbacks; train with transformers' "
                    "Trainer; evaluate per domain; save; push when hub.push is set.",
        epilog="Flags and KEY=VALUE overrides may come in any order after RECIPE. "
               "Recipes and launch lines: recipes/README.md.",
    )
    parser.set_defaults(func=run)


def recipe_overrides(command: TrainCommand, data: DataFlags) -> list[str]:
    """The ``key=value`` overrides that the command line says, shortcuts included."""
    out = list(command.overrides)
    for key, value in dataclasses.asdict(data).items():
        if value is not None:
            out.append(f"data.{key}={json.dumps(value)}")
    if command.output_dir:
        out.append(f"training.output_dir={json.dumps(command.output_dir)}")
    if command.max_steps is not None:
        out.append(f"training.max_steps={command.max_steps}")
    if command.shape:
        out.append(f"model.shape={json.dumps(command.shape)}")
    if command.resume:
        out.append(f"training.resume_from_checkpoint={json.dumps(command.resume)}")
    if command.push_to_hub:
        out += ["hub.push=true", f"hub.model_repo={json.dumps(command.push_to_hub)}"]
    return out


def run(command: TrainCommand, data: DataFlags) -> int:
    from .models import build_model, count_parameters
    from .recipe import load_train_config
    from .train import train

    cfg = load_train_config(command.recipe, recipe_overrides(command, data))
    if command.dry_run:
        import yaml

        vocab = eos = None
        if cfg.data.store:
            from .formats.token_store import TokenStore

            store = TokenStore(cfg.data.store)
            vocab, eos = store.vocab_size, store.eos_token_id
        model = build_model(cfg.model, vocab_size=vocab, eos_token_id=eos, device="meta",
                            where=cfg.source or "the recipe")
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
        print(f"# parameters: {count_parameters(model):,}")
        return 0
    result = train(cfg)
    from .hub import is_main_process

    if is_main_process():
        summary = {"output_dir": result.output_dir, "global_step": result.global_step,
                   "num_parameters": result.num_parameters, **result.metrics,
                   **{k: v for k, v in result.throughput.items() if k.startswith("perf/")}}
        if result.pushed:
            summary["pushed"] = result.pushed
        json.dump(summary, sys.stdout, indent=2)
        print()
    return 0
