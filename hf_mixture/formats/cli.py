"""``hf-mixture tokenize`` and ``hf-mixture inspect``.

Top-level imports stay light: the work is imported inside ``run_*`` so that
``hf-mixture --help`` does not load ``datasets``.  Every option is a field of
:class:`TokenizeConfig` / :class:`InspectCommand`: a flag and a ``--config`` key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import HFMixtureError
from .tokenize import DEFAULT_VALIDATION_FRACTION


@dataclass
class TokenizeConfig:
    """Options of ``hf-mixture tokenize`` (flags and ``--config`` keys)."""

    input: str = field(metadata={"positional": True, "metavar": "INPUT",
                                 "help": "Clustered corpus folder or Hub dataset id."})
    output: str = field(metadata={"metavar": "STORE", "help": "Token store folder to write."})
    tokenizer: str | None = field(default=None, metadata={
        "metavar": "NAME_OR_PATH",
        "help": "Fast tokenizer (folder or Hub id) whose vocabulary the ids belong to (for "
                "token-id input such as ClimbLab it may be left out when --vocab-size and "
                "--eos-id are given)."})
    vocab_size: int | None = field(default=None, metadata={
        "help": "Vocabulary size of token-id input without --tokenizer (GPT-2: 50257)."})
    eos_id: int | None = field(default=None, metadata={
        "help": "EOS id (GPT-2: 50256); default: the tokenizer's."})
    clusters: str | None = field(default=None, metadata={
        "metavar": "K,K,...",
        "help": "Only these clusters (e.g. 1,5,7): nothing of the others is read."})
    max_files_per_cluster: int | None = field(default=None, metadata={
        "metavar": "N", "help": "Only the first N files of each cluster (or of a mixed corpus)."})
    download: bool = field(default=False, metadata={
        "help": "Download Hub files whole into the Hugging Face cache instead of streaming "
                "their row groups."})
    validation_fraction: float = field(default=DEFAULT_VALIDATION_FRACTION, metadata={
        "metavar": "F",
        "help": "Share of each cluster's documents held out for validation (at least one "
                "document per cluster of two or more)."})
    seed: int = field(default=0, metadata={"help": "Seed of the validation split's hash."})
    revision: str | None = field(default=None, metadata={
        "help": "Hub revision of INPUT (branch, tag or commit)."})
    num_proc: int | None = field(default=None, metadata={
        "help": "Processes that tokenize text (default: one; the Rust tokenizer already uses "
                "every core, so more pays off only on many-core machines; token ids are copied "
                "in-process)."})
    overwrite: bool = field(default=False, metadata={
        "help": "Replace an existing store made from different inputs or settings."})
    executor: str | None = field(default=None, metadata={
        "choices": ("local", "slurm", "ray"),
        "help": "Convert the clusters as datatrove tasks on this executor (default: one "
                "process)."})
    tasks: int | None = field(default=None, metadata={
        "help": "With --executor: tasks (default: one per cluster)."})
    workers: int | None = field(default=None, metadata={
        "help": "With --executor: tasks at once (default: local, one per core)."})


@dataclass
class InspectCommand:
    """Options of ``hf-mixture inspect``."""

    path: str = field(metadata={"positional": True, "metavar": "PATH",
                                "help": "Token store, clustered corpus folder or Hub dataset id."})
    json: bool = field(default=False, metadata={
        "help": "Print JSON for programs instead of a table."})
    revision: str | None = field(default=None, metadata={
        "help": "Hub revision when PATH is a Hub dataset id."})


def add_parser(subparsers) -> None:
    tok = subparsers.add_parser(
        "tokenize",
        dataclass_types=[TokenizeConfig],
        help="Clustered corpus (ours or ClimbLab's) -> memory-mapped token store.",
        description=(
            "Turn a clustered corpus (a folder, the ClimbLab layout, or a Hub dataset id) into a token "
            "store: one component cluster_<k> per cluster, a seeded held-out validation slice, and a "
            "manifest. Token ids already in the corpus are copied, not re-tokenized. Rerunning with "
            "the same inputs and settings does nothing."
        ),
    )
    tok.set_defaults(func=run_tokenize)

    ins = subparsers.add_parser(
        "inspect",
        dataclass_types=[InspectCommand],
        help="Per-cluster docs, tokens, share and description of a corpus or token store.",
        description="Describe a clustered corpus or a token store: per cluster/component its documents, "
        "tokens, share of tokens and description.",
    )
    ins.set_defaults(func=run_inspect)


def run_tokenize(config: TokenizeConfig) -> int:
    from ..executors import ExecutorConfig
    from .inspect import format_table, inspect_store
    from .tokenize import tokenize

    result = tokenize(
        config.input,
        config.output,
        config.tokenizer,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
        overwrite=config.overwrite,
        num_proc=config.num_proc,
        revision=config.revision,
        vocab_size=config.vocab_size,
        eos_id=config.eos_id,
        clusters=_cluster_list(config.clusters),
        max_files_per_cluster=config.max_files_per_cluster,
        download=config.download,
        executor=None if config.executor is None else ExecutorConfig(
            executor=config.executor, tasks=config.tasks, workers=config.workers),
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


def run_inspect(command: InspectCommand) -> int:
    from .inspect import format_table, inspect_path

    info = inspect_path(command.path, revision=command.revision)
    if command.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_table(info))
    return 0
