"""The ``hf-mixture`` command line.

Each subcommand lives beside the code it drives, in a module that defines
``add_parser(subparsers)``: ``subparsers.add_parser(NAME, dataclass_types=[...])`` makes a
:class:`~hf_mixture.config.ConfigParser` (one flag per dataclass field, ``--config FILE.yaml``
of the same names), and the parser's ``func`` default receives the dataclass instances.
Modules are listed here once, in the order ``--help`` shows them.  Bad input (a flag value,
a config file's key, a path) raises :class:`~hf_mixture.errors.HFMixtureError`: the CLI
prints its one sentence and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from . import __version__
from .config import ConfigParser
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
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="Log debug messages; show other libraries' progress bars and INFO "
                             "lines (also in the worker processes).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ConfigParser)
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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # The command's name for error lines, also when its options do not parse (the top-level
    # options are all flags, so it is the first word that is not one).
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        args = parser.parse_args(argv)   # builds and validates the command's dataclasses
    except HFMixtureError as err:
        print(f"hf-mixture {command}: error: {err}", file=sys.stderr)
        return 2
    _configure_output(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(*args.options)
    except BrokenPipeError:
        # `hf-mixture inspect --json | head`: the reader left; that is not an error to report.
        # stdout goes to /dev/null so that the interpreter's final flush stays silent too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except HFMixtureError as err:
        print(f"hf-mixture {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RecursionError, MemoryError) as err:
        # Permissions, a full disk, a missing file, JSON/YAML a user wrote, a query nested too
        # deep: one sentence naming what failed; the traceback only with -v.
        if args.verbose:
            raise
        print(f"hf-mixture {args.command}: error: {describe_error(err)} (run with -v for "
              "the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Workers ignore SIGINT and die with this process (hf_mixture._procs); a second
        # Ctrl-C during the cleanup ends it at once instead of printing a traceback.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        print(f"hf-mixture {args.command}: interrupted; rerun the same command to resume.",
              file=sys.stderr)
        return 130
    _close_process_group()
    return int(result or 0)


def describe_error(err: BaseException) -> str:
    """One sentence for an error that is not ours: what failed, on which file."""
    import errno
    import json

    if isinstance(err, RecursionError):
        return "the input is nested too deeply to read (a query or document nested thousands deep)"
    if isinstance(err, MemoryError):
        return "out of memory"
    if isinstance(err, json.JSONDecodeError):
        return f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
    if isinstance(err, OSError):
        where = f" '{err.filename}'" if err.filename else ""
        what = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.ENOSPC: "no space left on the device", errno.ENOENT: "no such file",
                errno.EROFS: "the filesystem is read-only", errno.EDQUOT: "disk quota exceeded",
                }.get(err.errno, err.strerror or type(err).__name__)
        return f"{what}{where}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _configure_output(verbose: bool) -> None:
    """Our INFO lines by default; other libraries' only with ``-v`` (faiss.loader's INFO about
    a missing AVX2 module reads like an error), and their progress bars and banners too
    (:func:`~hf_mixture._progress.quiet_third_party`, here and in the worker processes,
    which inherit ``HF_MIXTURE_VERBOSE``).  Log lines go above our live bar, never into it;
    without a terminal the bar is plain lines (no carriage returns in a log)."""
    from ._progress import VERBOSE_ENV, BarSafeHandler, quiet_third_party

    root = logging.getLogger()
    if not root.handlers:  # like basicConfig: a root logger that has handlers is left alone
        handler = BarSafeHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("hf_mixture").setLevel(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    quiet_third_party()  # a no-op with -v (HF_MIXTURE_VERBOSE=1)


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
