"""What is in a clustered corpus or a token store (``hf-mixture inspect``).

:func:`inspect_path` tells the two apart (a token store has a ``manifest.json``
of format ``hf_mixture.token_store``; anything else is opened as a clustered
corpus, ours or ClimbLab's) and returns one plain dict; :func:`format_table`
renders it for people.

>>> info = inspect_path("store/")                               # doctest: +SKIP
>>> [(c["name"], c["docs"], round(c["share"], 3)) for c in info["components"]]   # doctest: +SKIP
[('cluster_0', 1200, 0.412), ('cluster_1', 800, 0.588)]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import HFMixtureError
from .token_store import FORMAT as STORE_FORMAT
from .token_store import MANIFEST as STORE_MANIFEST


def _is_token_store(path: Path) -> bool:
    manifest = path / STORE_MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == STORE_FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise HFMixtureError(f"{manifest} is not valid JSON.") from None


def _shares(rows: list[dict[str, Any]]) -> None:
    known = [r["tokens"] for r in rows if r["tokens"] is not None]
    total = sum(known) if len(known) == len(rows) else None
    for r in rows:
        r["share"] = (r["tokens"] / total) if total else None


def inspect_store(path: str | os.PathLike) -> dict[str, Any]:
    """Per-component docs, tokens, token share and description of a token store."""
    from .token_store import TokenStore

    store = TokenStore(path)
    rows = []
    for name in store.components:
        info = store.info(name)
        rows.append(
            {
                "name": name,
                "cluster_id": info.get("cluster_id"),
                "docs": store.num_docs(name, "train"),
                "tokens": store.num_tokens(name, "train"),
                "validation_docs": store.num_docs(name, "validation"),
                "validation_tokens": store.num_tokens(name, "validation"),
                "description": info.get("description"),
            }
        )
    _shares(rows)
    manifest = store.manifest
    return {
        "kind": "token_store",
        "path": str(path),
        "tokenizer": manifest.get("tokenizer"),
        "dtype": manifest.get("dtype"),
        "source": manifest.get("source"),
        "num_components": len(rows),
        "docs": sum(r["docs"] for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
        "validation_docs": sum(r["validation_docs"] for r in rows),
        "validation_tokens": sum(r["validation_tokens"] for r in rows),
        "components": rows,
    }


def inspect_corpus(path: str | os.PathLike, *, revision: str | None = None,
                   filesystem=None) -> dict[str, Any]:
    """Per-cluster docs, tokens, token share and description of a clustered corpus.

    Reads parquet footers and ``token_count`` column chunks only (range requests on the
    Hub): ClimbLab's 2 TB are described from a few megabytes.  A ClimbMix-style mixed corpus
    is listed by its files (its clusters are known only after reading every row).
    """
    from .mixed import MixedCorpus, open_corpus

    corpus = open_corpus(path, revision=revision, filesystem=filesystem)
    if isinstance(corpus, MixedCorpus):
        return {"kind": "mixed_corpus", "path": str(path), "revision": corpus.revision,
                "layout": "mixed (ClimbMix)", "files": corpus.files, "num_components": None,
                "docs": None, "tokens": None, "components": []}
    rows = [
        {
            "name": c["config_name"],
            "cluster_id": c["id"],
            "docs": c["docs"],
            "tokens": c["tokens"],
            "description": c.get("description"),
        }
        for c in corpus.clusters
    ]
    _shares(rows)
    tokens = [r["tokens"] for r in rows]
    return {
        "kind": "clustered_corpus",
        "path": str(path),
        "revision": corpus.revision,
        "layout": "hf_mixture" if corpus.manifest is not None else "climblab",
        "tokenizer": corpus.tokenizer_info,
        "columns": corpus.column_names,
        "num_components": len(rows),
        "docs": sum(r["docs"] for r in rows),
        "tokens": None if None in tokens else sum(tokens),
        "components": rows,
    }


def inspect_path(path: str | os.PathLike, *, revision: str | None = None,
                 filesystem=None) -> dict[str, Any]:
    """Describe a token store or a clustered corpus (local folder or Hub id) as a plain dict.

    Keys: ``kind`` (``"token_store"`` or ``"clustered_corpus"``), ``path``,
    ``tokenizer``, ``docs``, ``tokens``, and ``components``: one dict per
    cluster/component with ``name``, ``cluster_id``, ``docs``, ``tokens``,
    ``share`` (of all tokens) and ``description`` (plus ``validation_docs`` /
    ``validation_tokens`` for a store).

    >>> inspect_path("corpus/")["components"][0]["name"]        # doctest: +SKIP
    'cluster_0'
    """
    p = Path(path)
    if filesystem is None and p.is_dir() and _is_token_store(p):
        return inspect_store(p)
    return inspect_corpus(path, revision=revision, filesystem=filesystem)


def _fmt_int(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _fmt_share(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.1f}%"


def format_table(info: dict[str, Any], *, width: int = 60) -> str:
    """A fixed-width table of :func:`inspect_path`'s result, one line per component."""
    if info["kind"] == "mixed_corpus":
        return "\n".join([f"{info['path']}: {len(info['files'])} files of mixed clusters "
                           "(ClimbMix layout); tokenize reads them to split the clusters:",
                           *(f"  {f}" for f in info["files"])])
    store = info["kind"] == "token_store"
    header = ["component" if store else "cluster", "docs", "tokens", "share"]
    if store:
        header += ["val docs", "val tokens"]
    header.append("description")
    lines = []
    for r in info["components"]:
        row = [r["name"], _fmt_int(r["docs"]), _fmt_int(r["tokens"]), _fmt_share(r["share"])]
        if store:
            row += [_fmt_int(r["validation_docs"]), _fmt_int(r["validation_tokens"])]
        desc = " ".join(str(r.get("description") or "").split())
        row.append(desc if len(desc) <= width else desc[: width - 1] + "…")
        lines.append(row)
    total = [
        "total",
        _fmt_int(info["docs"]),
        _fmt_int(info["tokens"]),
        "100.0%" if info["tokens"] else "?",
    ]
    if store:
        total += [_fmt_int(info["validation_docs"]), _fmt_int(info["validation_tokens"])]
    total.append("")
    widths = [max(len(x[i]) for x in [header, *lines, total]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1])]
        out.append(cells[-1])
        return "  ".join(out).rstrip()

    tok = info.get("tokenizer") or {}
    kind = "token store" if store else f"clustered corpus ({info.get('layout')} layout)"
    title = f"{kind}: {info['path']}"
    if tok:
        title += f"  tokenizer: {tok.get('name')} (vocab {tok.get('vocab_size')})"
    rule = "-" * len(render(header))
    body = [title, render(header), rule, *(render(r) for r in lines), rule, render(total)]
    return "\n".join(body)
