"""``hf-mixture tokenize`` and ``hf-mixture inspect``.

Top-level imports stay light: the work is imported inside ``run_*`` so that
``hf-mixture --help`` does not load ``datasets`` or ``transformers``.
"""

from __future__ import annotations

import argparse
import json

from ..errors import HFMixtureError


def add_parser(subparsers) -> None:
    tok = subparsers.add_parser(
        "tokenize",
        help="Clustered corpus (ours or ClimbLab's) -> memory-mapped token store.",
        description=(
            "Turn a clustered corpus (a folder, the ClimbLab layout, or a Hub dataset id) into a token "
            "store: one component cluster_<k> per cluster, a seeded held-out validation slice, and a "
            "manifest. Token ids already in the corpus are copied, not re-tokenized. Rerunning with "
            "the same inputs and settings does nothing."
        ),
    )
    tok.add_argument("input", metavar="INPUT", help="Clustered corpus folder or Hub dataset id.")
    tok.add_argument(
        "--tokenizer",
        default=None,
        metavar="NAME_OR_PATH",
        help="Fast tokenizer (folder or Hub id) whose vocabulary the ids belong to (for token-id "
        "input such as ClimbLab it may be left out when --vocab-size and --eos-id are given).",
    )
    tok.add_argument("--vocab-size", type=int, default=None,
                     help="Vocabulary size of token-id input without --tokenizer (GPT-2: 50257).")
    tok.add_argument("--eos-id", type=int, default=None,
                     help="EOS id (GPT-2: 50256); default: the tokenizer's.")
    tok.add_argument("--clusters", default=None, metavar="K,K,...",
                     help="Only these clusters (e.g. 1,5,7): nothing of the others is read.")
    tok.add_argument("--max-files-per-cluster", type=int, default=None, metavar="N",
                     help="Only the first N files of each cluster (or of a mixed corpus).")
    tok.add_argument("--executor", default=None, choices=("local", "slurm", "ray"),
                     help="Convert the clusters as datatrove tasks on this executor (default: "
                     "one process); the Slurm/Ray options are those of `hf-mixture cluster`.")
    tok.add_argument("--tasks", type=int, default=None,
                     help="With --executor: tasks (default: one per cluster).")
    tok.add_argument("--workers", type=int, default=None,
                     help="With --executor: tasks at once (default: local, one per core).")
    tok.add_argument("--download", action="store_true",
                     help="Download Hub files whole into the Hugging Face cache instead of "
                     "streaming their row groups.")
    tok.add_argument(
        "--output", required=True, metavar="STORE", help="Token store folder to write."
    )
    tok.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        metavar="F",
        help="Share of each cluster's documents held out for validation (default: 0.01; "
        "at least one document per cluster of two or more).",
    )
    tok.add_argument(
        "--seed", type=int, default=0, help="Seed of the validation split's hash (default: 0)."
    )
    tok.add_argument(
        "--revision", default=None, help="Hub revision of INPUT (branch, tag or commit)."
    )
    tok.add_argument(
        "--num-proc",
        type=int,
        default=None,
        help="Processes that tokenize text (default: one; the Rust tokenizer already uses every "
        "core, so more pays off only on many-core machines; token ids are copied in-process).",
    )
    tok.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace an existing store made from different inputs or settings.",
    )
    tok.set_defaults(func=run_tokenize)

    ins = subparsers.add_parser(
        "inspect",
        help="Per-cluster docs, tokens, share and description of a corpus or token store.",
        description="Describe a clustered corpus or a token store: per cluster/component its documents, "
        "tokens, share of tokens and description.",
    )
    ins.add_argument(
        "path", metavar="PATH", help="Token store, clustered corpus folder or Hub dataset id."
    )
    ins.add_argument(
        "--json", action="store_true", help="Print JSON for programs instead of a table."
    )
    ins.add_argument("--revision", default=None, help="Hub revision when PATH is a Hub dataset id.")
    ins.set_defaults(func=run_inspect)


def run_tokenize(args: argparse.Namespace) -> int:
    from ..executors import ExecutorConfig
    from .inspect import format_table, inspect_store
    from .tokenize import DEFAULT_VALIDATION_FRACTION, tokenize

    fraction = (
        DEFAULT_VALIDATION_FRACTION
        if args.validation_fraction is None
        else args.validation_fraction
    )
    result = tokenize(
        args.input,
        args.output,
        args.tokenizer,
        validation_fraction=fraction,
        seed=args.seed,
        overwrite=args.overwrite,
        num_proc=args.num_proc,
        revision=args.revision,
        vocab_size=args.vocab_size,
        eos_id=args.eos_id,
        clusters=_cluster_list(args.clusters),
        max_files_per_cluster=args.max_files_per_cluster,
        download=args.download,
        executor=None if args.executor is None else ExecutorConfig(
            executor=args.executor, tasks=args.tasks, workers=args.workers),
    )
    if not result.written:
        print(f"{result.path} is up to date (same inputs and settings); nothing to do.")
        return 0
    print(f"wrote token store {result.path}")
    print(format_table(inspect_store(result.path)))
    return 0


def _cluster_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HFMixtureError(f"--clusters must be cluster ids separated by commas (e.g. 1,5,7), "
                             f"got {text!r}.") from None


def run_inspect(args: argparse.Namespace) -> int:
    from .inspect import format_table, inspect_path

    info = inspect_path(args.path, revision=args.revision)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_table(info))
    return 0
