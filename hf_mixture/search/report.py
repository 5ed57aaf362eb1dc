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


def _params(n: Any) -> str:
    return f"{n / 1e6:.2f}M" if isinstance(n, (int, float)) else "?"


def _plots(output_dir: Path, names: list[str], natural: np.ndarray, weights: dict[str, float],
           quality: dict[str, Any] | None, target_name: str, *,
           winner: tuple[str, float, float | None] | None = None,
           labels: dict[str, str] | None = None, title: str = "") -> list[str]:
    """``winner``: (label, predicted, observed) of the returned mixture; ``labels``: component
    name -> the name shown (``cluster_3 — wordnet, noun, verb``)."""
    from .._imports import is_matplotlib_available

    if not is_matplotlib_available():
        return []
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    labels = labels or {}
    drawn = []
    if quality and quality.get("predicted"):
        fig, ax = plt.subplots(figsize=(5.0, 4.8))
        pred, act = np.array(quality["predicted"]), np.array(quality["actual"])
        ax.scatter(act, pred, s=18, label="proxy run (predicted held out)")
        xs, ys = list(act) + list(pred), list(pred)
        if winner is not None and winner[2] is not None:
            ax.scatter([winner[2]], [winner[1]], marker="*", s=160, color="C3", zorder=3,
                       label=f"returned mixture ({winner[0]}): observed vs predicted")
            xs += [winner[1], winner[2]]
        lo, hi = float(min(xs)), float(max(xs))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--",
                label="predicted = actual (a perfect predictor)")
        ax.set_xlabel(f"actual {target_name}")
        ax.set_ylabel("predicted")
        rho = quality.get("spearman")
        ax.set_title(f"{quality['predictor']}: held-out Spearman {_fmt(rho, 3)}, "
                     f"{quality['scheme']}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        with atomic_path(output_dir / "predicted_vs_actual.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        drawn.append("predicted_vs_actual.png")
    import textwrap

    # Horizontal bars: a component's label ("cluster_3 — wordnet, noun, verb") reads on the
    # left however long it is; the first component is at the top.
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.45 * len(names)))
    y = np.arange(len(names))[::-1]
    ax.barh(y + 0.2, natural, height=0.4, label="natural share (tokens)")
    ax.barh(y - 0.2, [weights[n] for n in names], height=0.4, label="search winner")
    ax.set_yticks(y, [textwrap.shorten(labels.get(n, n), 64, placeholder=" …") for n in names],
                  fontsize=7)
    ax.set_xlabel("weight")
    ax.set_title(textwrap.fill(title or "Mixture weights: the search's winner against the "
                               "natural shares", 70), fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(output_dir / "weights.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    drawn.append("weights.png")
    return drawn


def write_report(output_dir: Path, config, names: list[str], natural: np.ndarray,
                 runs: list[dict[str, Any]], quality: dict[str, Any], spec, weights: dict[str, float],
                 predicted: float, best_run: dict[str, Any], used: str | None = None, *,
                 verification: dict[str, Any] | None = None,
                 transfer: dict[str, Any] | None = None,
                 labels: dict[str, str] | None = None) -> Path:
    """Write ``output_dir/report.md`` (and its PNGs); returns its path.

    ``used``: the predictor that chose the winner (``config.predictor``, or what ``auto`` picked).
    ``verification``: the final candidates as trained (see ``SearchResult.verification``);
    ``transfer``: the transfer check's Spearman per predictor; ``labels``: component name ->
    name shown with its description.
    """
    used = used or config.predictor
    sign = -1.0 if spec.greater_is_better else 1.0
    better = "higher" if spec.greater_is_better else "lower"
    lines = [f"# Mixture search report: {output_dir.name}", ""]
    lines += [f"Target: **{spec.name}** ({better} is better).  Predictor: **{used}**"
              + ((" (auto: best held-out Spearman), law-based predictors first: another is used "
                  f"only when its Spearman is more than {config.auto_margin:g} higher")
                 if config.predictor == "auto" else "") + ".  "
              + (f"Final mixture: **{verification['winner']}**, the best observed of the "
                 f"final candidates trained with {verification['seeds']} seed(s) each."
                 if verification else
                 f"Final mixture: **{config.final}**"
                 + (f" (k = {config.final_top_k})" if config.final == "top_k_average" else "")
                 + ", a prediction: it was not trained (verify_seeds 0)."),
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
    tq = (transfer or {}).get("spearman", {})
    lines += ["", "## Predictor quality", "",
              "Same-scale: cross-validated on held-out proxy runs."
              + (f"  Transfer: fitted on the small proxies (each mixture left out), ranking "
                 f"{len(transfer['runs'])} round-1 mixtures trained with the larger "
                 f"`{transfer['model']}` ({_params(transfer.get('num_params'))} parameters, the "
                 f"small proxies {_params(transfer.get('small_num_params'))})." if transfer else
                 "  (`--transfer-check` also measures how each ranks runs of a larger model.)"),
              "",
              "| predictor | same-scale Spearman | MAE | transfer Spearman | runs | scheme |",
              "|---|---:|---:|---:|---:|---|"]
    for name, q in quality.items():
        rho_t = _fmt(tq.get(name), 3) if transfer else "—"
        if q is None or "error" in q:
            lines.append(f"| {name} | — | — | {rho_t} | — | {q.get('error', '') if q else ''} |")
        else:
            mark = " (used)" if name == used else ""
            lines.append(f"| {name}{mark} | {_fmt(q['spearman'], 3)} | {_fmt(q['mae'])} | "
                         f"{rho_t} | {q['num_runs']} | {q['scheme']} |")
    if transfer:
        lines += ["", (f"The small proxies' own losses rank the larger runs at Spearman "
                       f"{_fmt(transfer.get('observed_spearman'), 3)}.")
                  + (f"  Failed transfer runs: {', '.join(transfer['failed'])}."
                     if transfer.get("failed") else "")]
    if verification:
        lines += ["", "## Verification: the final candidates, trained", "",
                  "| candidate | what | predicted | observed | predicted − observed | runs |",
                  "|---|---|---:|---:|---:|---|"]
        for label, c in verification["candidates"].items():
            mark = " **(winner)**" if label == verification["winner"] else ""
            lines.append(f"| {label}{mark} | {c['what']} | {_fmt(c['predicted'])} | "
                         f"{_fmt(c['observed'])} | {_fmt(c['error'])} | "
                         + ", ".join(f"`{r}`" for r in c["runs"]) + " |")
        win = verification["candidates"][verification["winner"]]
        lines += ["", (f"Returned: **{verification['winner']}**, observed {_fmt(win['observed'])}"
                       f" against predicted {_fmt(win['predicted'])} (the predictor was off by "
                       f"{win['error']:+.4f}).")]
    win_obs = (verification["candidates"][verification["winner"]]["observed"]
               if verification else None)
    lines += ["", "## The winner", "",
              (f"Predicted target: **{_fmt(predicted)}**"
               + (f"; observed (trained): **{_fmt(win_obs)}**" if verification else
                  " (a prediction: not trained)")
               + f"; best proxy run: `{best_run['run']}` with {_fmt(best_run['target'])}."), "",
              "| component | natural share | winner | best run |", "|---|---:|---:|---:|"]
    labels = labels or {}
    for n, share in zip(names, natural):
        lines.append(f"| {labels.get(n, n)} | {share:.3f} | {weights[n]:.3f} | "
                     f"{best_run['weights'][n]:.3f} |")
    win = None
    if verification:
        c = verification["candidates"][verification["winner"]]
        win = (verification["winner"], c["predicted"], c["observed"])
    pictures = _plots(output_dir, names, natural, weights, quality.get(used), spec.name,
                      winner=win, labels=labels,
                      title=f"{output_dir.name}: the winner's weights against the natural shares "
                            f"(target {spec.name})")
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
