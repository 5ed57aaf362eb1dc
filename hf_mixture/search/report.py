"""``report.md`` of a search: setup, iteration table, predictor quality, winner, pictures.

Two PNGs are drawn with matplotlib (when installed): ``predicted_vs_actual.png``
(each finished run's target against the out-of-fold prediction of the search's
predictor) and ``weights.png`` (the winner's weights against the pool's natural
token shares).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, atomic_write_text


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _plots(output_dir: Path, names: list[str], natural: np.ndarray, weights: dict[str, float],
           quality: dict[str, Any] | None, target_name: str) -> list[str]:
    from .._imports import is_matplotlib_available

    if not is_matplotlib_available():
        return []
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    drawn = []
    if quality and quality.get("predicted"):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        pred, act = np.array(quality["predicted"]), np.array(quality["actual"])
        ax.scatter(act, pred, s=18)
        lo, hi = float(min(act.min(), pred.min())), float(max(act.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"actual {target_name}")
        ax.set_ylabel("predicted (held out)")
        rho = quality.get("spearman")
        ax.set_title(f"{quality['predictor']}: Spearman {_fmt(rho, 3)}, {quality['scheme']}",
                     fontsize=9)
        fig.tight_layout()
        with atomic_path(output_dir / "predicted_vs_actual.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        drawn.append("predicted_vs_actual.png")
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    ax.bar(x - 0.2, natural, width=0.4, label="natural share")
    ax.bar(x + 0.2, [weights[n] for n in names], width=0.4, label="search winner")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("weight")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(output_dir / "weights.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    drawn.append("weights.png")
    return drawn


def write_report(output_dir: Path, config, names: list[str], natural: np.ndarray,
                 runs: list[dict[str, Any]], quality: dict[str, Any], spec, weights: dict[str, float],
                 predicted: float, best_run: dict[str, Any], used: str | None = None) -> Path:
    """Write ``output_dir/report.md`` (and its PNGs); returns its path.

    ``used``: the predictor that chose the winner (``config.predictor``, or what ``auto`` picked).
    """
    used = used or config.predictor
    sign = -1.0 if spec.greater_is_better else 1.0
    better = "higher" if spec.greater_is_better else "lower"
    lines = [f"# Mixture search report: {output_dir.name}", ""]
    lines += [f"Target: **{spec.name}** ({better} is better).  Predictor: **{used}**"
              + (" (auto: best held-out Spearman)" if config.predictor == "auto" else "") + ".  "
              f"Final mixture: **{config.final}**"
              + (f" (k = {config.final_top_k})" if config.final == "top_k_average" else "") + ".",
              "",
              (f"Proxies: model `{config.proxy_init_from or config.proxy_model}`, "
               f"{config.proxy_tokens:,} tokens each (sequences of {config.proxy_seq_len}, batch "
               f"{config.proxy_batch_size}, lr {config.proxy_learning_rate:g}), seed "
               f"{config.seed}; rounds {config.rounds}; {config.candidates:,} candidates scored "
               "per round."), ""]
    if spec.facts:
        lines += [(f"Target text: {spec.facts.get('documents')} documents, "
                   f"{spec.facts.get('tokens'):,} tokens from `{spec.facts.get('source')}`."), ""]
    lines += ["## Iterations", "",
              ("| round | runs | finished | failed | best target | mean target | "
               "mean predicted (at planning) |"),
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for k in sorted({r["round"] for r in runs}):
        rr = [r for r in runs if r["round"] == k]
        vals = [r["target"] for r in rr if r["status"] == "finished" and r.get("target") is not None]
        preds = [r["predicted"] for r in rr if r.get("predicted") is not None]
        best = min(vals, key=lambda v: sign * v) if vals else None
        lines.append(f"| {k} | {len(rr)} | {len(vals)} | "
                     f"{sum(r['status'] == 'failed' for r in rr)} | {_fmt(best)} | "
                     f"{_fmt(float(np.mean(vals)) if vals else None)} | "
                     f"{_fmt(float(np.mean(preds)) if preds else None)} |")
    lines += ["", "## Predictor quality (cross-validated on held-out runs)", "",
              "| predictor | Spearman | MAE | runs | scheme |", "|---|---:|---:|---:|---|"]
    for name, q in quality.items():
        if q is None or "error" in q:
            lines.append(f"| {name} | — | — | — | {q.get('error', '') if q else ''} |")
        else:
            mark = " (used)" if name == used else ""
            lines.append(f"| {name}{mark} | {_fmt(q['spearman'], 3)} | {_fmt(q['mae'])} | "
                         f"{q['num_runs']} | {q['scheme']} |")
    lines += ["", "## The winner", "",
              (f"Predicted target: **{_fmt(predicted)}**; best proxy run: `{best_run['run']}` "
               f"with {_fmt(best_run['target'])}."), "",
              "| component | natural share | winner | best run |", "|---|---:|---:|---:|"]
    for n, share in zip(names, natural):
        lines.append(f"| {n} | {share:.3f} | {weights[n]:.3f} | {best_run['weights'][n]:.3f} |")
    pictures = _plots(output_dir, names, natural, weights, quality.get(used),
                      spec.name)
    if pictures:
        lines += ["", "## Pictures", ""] + [f"![{p[:-4]}]({p})" for p in pictures]
    ranked = sorted((r for r in runs if r["status"] == "finished" and r.get("target") is not None),
                    key=lambda r: sign * r["target"])
    lines += ["", "## Runs (best first)", "", "| run | target | mean domain loss | weights |",
              "|---|---:|---:|---|"]
    for r in ranked:
        w = ", ".join(f"{n} {r['weights'][n]:.2f}" for n in names)
        lines.append(f"| {r['run']} | {_fmt(r['target'])} | {_fmt(r.get('mean_domain_loss'))} | "
                     f"{w} |")
    failed = [r for r in runs if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{r['run']}`: {r.get('error', '?')}"
                                               for r in failed]
    lines += ["", "Settings:", "", "```json", json.dumps(config.to_dict(), indent=2), "```", ""]
    return atomic_write_text(output_dir / "report.md", "\n".join(lines))
