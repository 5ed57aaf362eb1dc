"""The clustering report and run summary, read from a run's work folder.

Shared by the finalize step (:class:`~.stages.FinalizeCorpus`), which writes them, and by
:func:`~.pipeline.cluster_corpus`, which returns them: neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._markdown import cell as _cell

REPORT = "report.md"
REPORT_DIR = "report"
SIZES_PNG = "cluster_sizes.png"
MAP_PNG = "centroid_map.png"


def _stat(stats_file: Path, label: str) -> int:
    """Sum of datatrove counter ``label`` over the steps of a stage's ``stats.json``."""
    if not stats_file.is_file():
        return 0
    total = 0
    for step in json.loads(stats_file.read_text()):
        value = step.get("stats", {}).get(label)
        if isinstance(value, dict):
            total += int(value.get("total", 0))
        elif isinstance(value, (int, float)):
            total += int(value)
    return total


def _merged_stats(work: Path, stage: str, tasks: int) -> Path:
    """datatrove writes a stage's merged stats only when the whole stage ran in one go; a
    resumed stage has per-task files: merge them the same way."""
    from datatrove.utils.stats import PipelineStats

    folder = work / "logs" / stage / "stats"
    out = work / "logs" / stage / "stats.merged.json"
    merged = PipelineStats()
    for t in range(tasks):
        f = folder / f"{t:05d}.json"
        if f.is_file():
            with open(f) as fh:
                merged += PipelineStats.from_json(json.load(fh))
    with open(out, "w") as fh:
        merged.save_to_disk(fh)
    return out


def collect_summary(work: Path, tasks: int, base: dict[str, Any]) -> dict[str, Any]:
    """The run's facts for ``clusters.json`` and the report, read from the work folder."""
    prep = _merged_stats(work, "prepare", tasks)
    timings_file = work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    embedded = _stat(prep, "embedded")
    seconds = timings.get("prepare", 0.0)
    model = json.loads((work / "model" / "model.json").read_text())
    return {**base,
            "input_docs": _stat(prep, "documents"), "empty_removed": _stat(prep, "empty"),
            "long_documents": _stat(prep, "long_documents"),
            "duplicates_removed": _stat(prep, "dropped"), "dedup": base["config"]["dedup"],
            "embedded": embedded,
            "docs_per_s": round(embedded / seconds, 1) if seconds > 0 else None,
            "timings": {k: round(v, 2) for k, v in timings.items()},
            "num_clusters": model["k"], "kmeans_backend": model["backend"],
            "kmeans_sample": model["sample"], "lexical": model["lexical"],
            "layout": model.get("layout"), "language": model.get("language"),
            "language_weight": model.get("language_weight"),
            "language_auto": model.get("language_auto", False),
            "language_shares": model.get("language_shares")}


# ----------------------------------------------------------------------------- report
def _language_line(summary: dict[str, Any]) -> str:
    """The report's language view line; an automatic choice names the shares behind it."""
    from .language import AUTO_MIN_SHARE

    shares = summary.get("language_shares") or {}
    why = ""
    if summary.get("language_auto"):
        guesses = ", ".join(f"{lang} {share:.1%}" for lang, share in shares.items())
        why = (f" (automatic: the k-means sample's first guesses {guesses}; on when two "
               f"languages reach {AUTO_MIN_SHARE:.0%} each)")
    if summary.get("language"):
        lang = summary["language"]
        return (f"- Language view: {lang['method']} {lang['version']} language probabilities, "
                f"weight {summary.get('language_weight')}{why}.")
    return f"- Language view: off{why}."


def render_report(facts: dict[int, dict[str, Any]], summary: dict[str, Any],
                  prune: dict[str, Any] | None, stats: dict | None = None) -> str:
    """The Markdown report: what was clustered, how, what was dropped, and each cluster."""
    cfg = summary["config"]
    emb = summary.get("embedder") or {}
    lines = [
        "# Clustering report",
        "",
        (f"- Documents: {summary['input_docs']} read from {summary['input']['files']} file(s) "
         f"in {summary['input']['shards']} shards ({summary['long_documents']} long documents cut "
         f"at {cfg['max_doc_chars']:,} characters), {summary['empty_removed']} empty texts and "
         f"{summary['duplicates_removed']} duplicates removed ({summary['dedup']} dedup), "
         f"{summary['embedded']} clustered."),
        (f"- Engine: datatrove {summary['executor']} executor, {summary['tasks']} tasks."),
        (f"- Embedding: `{emb.get('model')}` (max {cfg['max_seq_length']} tokens)"
         + (f" at {summary['docs_per_s']} docs/s (prepare stage)" if summary.get("docs_per_s")
            else "") + "."),
        (f"- Lexical view: {summary['lexical']['method']} ({summary['lexical']['dims']} dims), "
         f"weight {cfg['lexical_weight']} beside the embedding." if summary.get("lexical")
         else "- Lexical view: off (embeddings only)."),
        (f"- Layout view: {summary['layout']['method']} ({summary['layout']['dims']} dims), "
         f"weight {cfg['layout_weight']}." if summary.get("layout") else "- Layout view: off."),
        _language_line(summary),
        (f"- k-means: k = {summary['num_clusters']} ({summary['kmeans_backend']}, seed "
         f"{cfg['seed']}), centroids trained on a {summary['kmeans_sample']}-document sample, "
         "every document assigned."),
    ]
    if prune is None:
        lines.append("- Quality pruning: off.")
    else:
        lines.append(
            f"- Quality pruning ({prune['scorer']}, threshold {prune['threshold']}): "
            f"{len(prune['dropped'])} clusters ({summary['pruned_docs']} documents) dropped.")
    lines.append(("- Merge: spectral clustering of the boundary graph (the documents between "
                  "k-means clusters)" if cfg["linkage"] == "boundary" else
                  f"- Merge: {cfg['linkage']} linkage on centroids")
                 + f" -> {summary['final_clusters']} clusters.")
    lines.append("- Time: " + ", ".join(f"{name} {sec:.1f} s"
                                        for name, sec in summary["timings"].items()) + ".")
    lines += ["", f"![cluster sizes]({REPORT_DIR}/{SIZES_PNG})", "",
              f"![centroid map]({REPORT_DIR}/{MAP_PNG})", "", "## Clusters", ""]
    flags = any("quality_pass_rates" in f for f in facts.values())
    head = "| cluster | docs | tokens | mean quality |" + (
        " Gopher / repetition / FineWeb pass |" if flags else "") + " top terms |"
    lines += [head, "|---:|---:|---:|---:|" + ("---|" if flags else "") + "---|"]
    for k in sorted(facts):
        f = facts[k]
        rates = f.get("quality_pass_rates")
        lines.append(
            f"| {k} | {f['docs']} | {f.get('tokens', '')} | {f.get('mean_quality', '')} |"
            + (f" {' / '.join(f'{100 * v:.0f}%' for v in rates.values())} |" if flags and rates
               else (" |" if flags else ""))
            + f" {_cell(', '.join(f['top_terms']))} |")
    for k in sorted(facts):
        lines += ["", f"### cluster_{k}: {_cell(facts[k]['description'])}", ""]
        for ex in facts[k]["examples"]:
            lines.append(f"> {_cell(ex)}")
            lines.append("")
    if prune and prune["dropped"]:
        lines += ["", "## Dropped by quality pruning", ""]
        for d in prune["dropped"]:
            reasons = ", ".join(f"{r} ({n})" for r, n in d["reasons"].items()) or "low scores"
            example = _cell(d["examples"][0])[:160] if d["examples"] else ""
            lines.append(
                f"- k-means cluster {d['cluster']}: {d['docs']} docs, mean score "
                f"{d['mean_score']}; main failures (sampled): {reasons}. Example: `{example}`")
    return "\n".join(lines).rstrip() + "\n"
