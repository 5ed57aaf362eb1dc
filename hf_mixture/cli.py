"""The ``hf-mixture`` command line.

Each subcommand lives beside the code it drives, in a module that defines
``add_parser(subparsers)``; the parser's ``func`` default receives the parsed
arguments.  Modules are listed here once, in the order ``--help`` shows them.
Bad input raises :class:`~hf_mixture.errors.HFMixtureError`: the CLI prints its
one sentence and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import HFMixtureError

# (subcommand module, ...) — each module defines add_parser(subparsers).
COMMAND_MODULES = [
    "hf_mixture.climb",
    "hf_mixture.playground.cli",
    "hf_mixture.clustering.cli",
    "hf_mixture.formats.cli",
    "hf_mixture.mixture.cli",
    "hf_mixture.train_cli",
    "hf_mixture.search.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-mixture",
        description="Data mixtures as first-class Hugging Face artifacts.",
    )
    parser.add_argument("--version", action="version", version=f"hf_mixture {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # a feature not built yet
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except HFMixtureError as err:
        print(f"hf-mixture {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hf-mixture {args.command}: interrupted; rerun to resume.", file=sys.stderr)
        return 130
    _close_process_group()
    return int(result or 0)


def _close_process_group() -> None:
    """Under ``accelerate launch``/torchrun, tear the process group down before exit: a gloo
    group left to interpreter shutdown can abort a rank after a clean run ("terminate called
    without an active exception")."""
    if "torch.distributed" not in sys.modules:  # never import torch just for this
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
