"""``hf-mixture plan`` and ``hf-mixture validate``: check a mixture file before training.

    hf-mixture validate mixture.yaml [--store STORE]
    hf-mixture plan mixture.yaml --store STORE --tokens 2B [--json]

``validate`` loads the file (every check of :class:`~hf_mixture.mixture.mixture.Mixture`)
and, given a store, resolves every component's query against it.  ``plan``
prints the MPT-style table of proportions, effective tokens and epochs; warnings
(a component over its ``max_epochs``) go to stderr and do not change the exit status.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field

from ..errors import HFMixtureError

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_tokens(text: str) -> int:
    """A token count: ``1000000``, ``1_000_000``, ``1e6``, ``500M``, ``2.5B``, ``1T``.

    >>> parse_tokens("2.5B")
    2500000000
    """
    raw = str(text).strip().replace("_", "").replace(",", "")
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+]?[0-9]+)?)\s*([kKmMbBgGtT]?)", raw)
    if not match:
        raise HFMixtureError(f"--tokens {text!r} is not a token count (e.g. 1000000, 1e9, "
                             "500M, 2B).")
    value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if not math.isfinite(value) or value > 10**18:  # 1e18 tokens: far beyond any corpus
        raise HFMixtureError(f"--tokens {text!r} is too large to be a token count.")
    if value != int(value) or value <= 0:
        raise HFMixtureError(f"--tokens {text!r} must be a whole number of tokens > 0.")
    return int(value)


@dataclass
class PlanCommand:
    """Options of ``hf-mixture plan``."""

    mixture: str = field(metadata={"positional": True,
                                   "help": "Mixture file (.yaml, .yml or .json)."})
    store: str = field(metadata={"help": "Token store folder (hf-mixture tokenize)."})
    tokens: str = field(metadata={"help": "Tokens in the run: 1000000, 1e9, 500M, 2B ..."})
    json: bool = field(default=False, metadata={"help": "Print the plan as JSON."})
    markdown: bool = field(default=False, metadata={"help": "Print markdown tables."})


@dataclass
class ValidateCommand:
    """Options of ``hf-mixture validate``."""

    mixture: str | None = field(default=None, metadata={
        "positional": True,
        "help": "Mixture file (.yaml, .yml or .json); may be left out with --store."})
    store: str | None = field(default=None, metadata={
        "help": "Token store folder to check (offsets, metadata, vocabulary) and to resolve "
                "the queries against."})
    deep: bool = field(default=False, metadata={
        "help": "With --store: read every token and check it is inside the vocabulary."})


def add_parser(subparsers) -> None:
    plan = subparsers.add_parser(
        "plan", dataclass_types=[PlanCommand],
        help="Print a mixture's table of proportions, effective tokens and epochs.",
        description="Print, for a run of --tokens tokens over a token store, each component's "
                    "available tokens, proportion, effective tokens and epochs (per stage and "
                    "overall), and warn when a component exceeds its max_epochs.",
    )
    plan.set_defaults(func=run_plan)

    validate = subparsers.add_parser(
        "validate", dataclass_types=[ValidateCommand],
        help="Check a mixture file (and, with --store, resolve its queries).",
        description="Load a mixture file with every check; with --store also resolve each "
                    "component's query against the token store's train split.",
    )
    validate.set_defaults(func=run_validate)


def run_plan(args: PlanCommand) -> int:
    import warnings

    from ..formats.token_store import TokenStore
    from .mixture import Mixture
    from .plan import MixturePlanWarning

    total = parse_tokens(args.tokens)
    mixture = Mixture.load(args.mixture)
    store = TokenStore(args.store)
    with warnings.catch_warnings():
        # The plan carries its warnings; print them once, on stderr, below.
        warnings.simplefilter("ignore", MixturePlanWarning)
        plan = mixture.plan(total, store)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    elif args.markdown:
        print(plan.to_markdown(), end="")
    else:
        print(plan)
    for note in plan.warnings:
        print(f"hf-mixture plan: warning: {note}", file=sys.stderr)
    return 0


def run_validate(args: ValidateCommand) -> int:
    from .mixture import Mixture

    if args.mixture is None and not args.store:
        raise HFMixtureError("validate needs a mixture file, --store STORE, or both.")
    if args.deep and not args.store:
        raise HFMixtureError("--deep checks a token store: pass --store STORE.")
    store = None
    if args.store:
        from ..formats.token_store import TokenStore

        store = TokenStore(args.store)  # offsets, metadata rows and vocabulary checked on open
        if args.deep:
            store.validate_deep()
        print(f"{args.store}: token store is valid{' (every token read)' if args.deep else ''}: "
              f"{len(store.components)} components, vocabulary {store.vocab_size}")
    if args.mixture is None:
        return 0
    mixture = Mixture.load(args.mixture)
    weights = mixture.weights()
    title = f" {mixture.name!r}" if mixture.name else ""
    print(f"{args.mixture}: mixture{title} is valid: {len(mixture.components)} components, "
          f"{len(mixture.stages)} stages, temperature {mixture.temperature:g}, seed "
          f"{mixture.seed}, fingerprint {mixture.fingerprint}")
    resolved = {}
    if store is not None:
        resolved = {r.name: r for r in mixture.resolve(store, "train")}
    for c in mixture.components:
        line = f"  {c.name}: weight {weights[c.name]:.4f}"
        line += f", query {c.query!r}" if c.query else ", store component of that name"
        if c.name in resolved:
            r = resolved[c.name]
            line += (f" -> {r.num_docs:,} docs, {r.num_tokens:,} tokens in "
                     f"{len(r.parts)} store component{'s' if len(r.parts) != 1 else ''}")
        print(line)
    return 0
