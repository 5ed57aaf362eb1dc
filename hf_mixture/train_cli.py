"""``hf-mixture train``: run a training recipe (under ``accelerate launch`` for several GPUs).

    accelerate launch --config_file recipes/accelerate/1gpu.yaml -m hf_mixture train \\
        recipes/pretrain_1b.yaml --store STORE --mixture MIXTURE [key=value ...]

Overrides are ``section.key=value`` (values read as YAML), e.g.
``training.max_steps=200 training.activation_checkpointing=true model.shape=350m``; the
flags below are shortcuts for the common ones.  ``--dry-run`` prints the
resolved recipe and the model's parameter count (built on the meta device) and
trains nothing.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import add_dataclass_arguments, overrides_from_args


def _add_flags(parser: argparse.ArgumentParser) -> None:
    from .train import DataConfig

    # --store, --mixture, --seq-len, ... : the data section's fields.
    add_dataclass_arguments(parser, DataConfig)
    parser.add_argument("--output-dir", help="Shortcut for training.output_dir=...")
    parser.add_argument("--max-steps", type=int, help="Shortcut for training.max_steps=...")
    parser.add_argument("--shape", help="Shortcut for model.shape=... (a registered model shape).")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                        help="Resume from a checkpoint folder, or the latest one in output_dir.")
    parser.add_argument("--push-to-hub", metavar="REPO_ID",
                        help="Push the final model with a card to this Hub repo (hub.push).")
    parser.add_argument("--dry-run", action="store_true", default=None,
                        help="Print the resolved recipe and parameter count; do not train.")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="Train a model on a mixture from a recipe YAML (run under accelerate launch).",
        description="Build the model from the recipe (no weights download), the mixture dataset "
                    "over a token store and the recipe's callbacks; train with transformers' "
                    "Trainer; evaluate per domain; save; push when hub.push is set.",
        epilog="Flags and KEY=VALUE overrides may come in any order after CONFIG. "
               "Recipes and launch lines: recipes/README.md.",
    )
    _add_flags(parser)
    parser.add_argument("config", help="Recipe YAML (recipes/*.yaml).")
    # Everything after CONFIG is parsed by _parse_rest, so flags and overrides may mix.
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                        help="Recipe overrides, e.g. training.max_steps=100 model.shape=350m.")
    parser.set_defaults(func=run)


def _parse_rest(args: argparse.Namespace) -> argparse.Namespace:
    """Flags given after CONFIG win over those before it; the rest are overrides."""
    inner = argparse.ArgumentParser(prog="hf-mixture train CONFIG")
    _add_flags(inner)
    inner.add_argument("overrides", nargs="*")
    rest = inner.parse_intermixed_args(args.rest or [])
    merged = argparse.Namespace(**vars(args))
    for key, value in vars(rest).items():
        if value is not None or not hasattr(merged, key):
            setattr(merged, key, value)
    return merged


def _overrides(args: argparse.Namespace) -> list[str]:
    from .train import DataConfig

    out = list(args.overrides)
    for key, value in overrides_from_args(args, DataConfig).items():
        out.append(f"data.{key}={json.dumps(value)}")
    if args.output_dir:
        out.append(f"training.output_dir={json.dumps(args.output_dir)}")
    if args.max_steps is not None:
        out.append(f"training.max_steps={args.max_steps}")
    if args.shape:
        out.append(f"model.shape={json.dumps(args.shape)}")
    if args.resume:
        out.append(f"training.resume_from_checkpoint={json.dumps(args.resume)}")
    if args.push_to_hub:
        out += ["hub.push=true", f"hub.model_repo={json.dumps(args.push_to_hub)}"]
    return out


def run(args: argparse.Namespace) -> int:
    from .train import build_model, count_parameters, load_train_config, train

    args = _parse_rest(args)
    cfg = load_train_config(args.config, _overrides(args))
    if args.dry_run:
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
