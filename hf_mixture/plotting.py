"""Pictures of a mixture over a run: weights over steps (stacked) and per-domain eval loss.

Sources are plain data, so the picture can be drawn during a run, after it, or
from a saved ``trainer_state.json``:

- a Trainer ``log_history`` (``trainer.state.log_history``): the weights are
  the ``mixture/<component>`` entries the mixture callbacks log, the eval losses
  the ``eval_<component>_loss`` entries;
- a :class:`~hf_mixture.mixture.LiveMixture` (or its ``history``): the exact
  weights history, drawn as a step function (samples → steps with
  ``samples_per_step``).

>>> plot_mixture(trainer.state.log_history, "mixture.png")             # doctest: +SKIP
PosixPath('mixture.png')
>>> plot_mixture(trainer.state.log_history, "run.png", live=data.live,
...              samples_per_step=64)                                     # doctest: +SKIP
PosixPath('run.png')
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._imports import require
from .errors import HFMixtureError

WEIGHT_PREFIX = "mixture/"


def weights_from_log_history(log_history: Sequence[Mapping[str, Any]],
                             domains: Sequence[str] | None = None
                             ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(steps, domains, weights[steps, domains])`` from the ``mixture/<d>`` log entries.

    >>> weights_from_log_history([{"step": 5, "mixture/a": 0.25, "mixture/b": 0.75}])[2].tolist()
    [[0.25, 0.75]]
    """
    if domains is None:
        seen: dict[str, None] = {}
        for entry in log_history:
            for key in entry:
                if key.startswith(WEIGHT_PREFIX) and key != f"{WEIGHT_PREFIX}stage":
                    seen.setdefault(key[len(WEIGHT_PREFIX):])
        domains = list(seen)
    rows, steps = [], []
    last: dict[int, int] = {}
    for entry in log_history:
        if not all(f"{WEIGHT_PREFIX}{d}" in entry for d in domains) or not domains:
            continue
        step = int(entry.get("step", len(steps)))
        row = [float(entry[f"{WEIGHT_PREFIX}{d}"]) for d in domains]
        if step in last:       # several logs at one step (train + eval): the last one wins
            rows[last[step]] = row
            continue
        last[step] = len(rows)
        steps.append(step)
        rows.append(row)
    return (np.asarray(steps, dtype=np.int64), list(domains),
            np.asarray(rows, dtype=np.float64).reshape(len(rows), len(domains)))


def weights_from_history(history: Any, *, samples_per_step: int | None = None,
                         until: float | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Step-function points ``(x, domains, weights)`` of a LiveMixture's weights history.

    ``x`` is in samples, or in optimizer steps with ``samples_per_step``; each
    change appears twice (end of the old weights, start of the new) so a plain
    line/area plot draws the steps.  ``until`` extends the last weights to that x.
    """
    names = list(getattr(history, "names", []) or [])
    entries = list(getattr(history, "history", history))
    if not entries:
        raise HFMixtureError("The weights history is empty.")
    if not names:
        names = [f"component_{i}" for i in range(len(entries[0].weights))]
    entries = sorted(entries, key=lambda c: c.sample)
    scale = float(samples_per_step) if samples_per_step else 1.0
    xs: list[float] = []
    ws: list[tuple[float, ...]] = []
    for change in entries:
        x = change.sample / scale
        if xs and xs[-1] == x:          # two changes at one sample: the later one wins
            ws[-1] = change.weights
            continue
        if ws:
            xs.append(x)
            ws.append(ws[-1])
        xs.append(x)
        ws.append(change.weights)
    end = until if until is not None else xs[-1]
    if end > xs[-1]:
        xs.append(end)
        ws.append(ws[-1])
    return np.asarray(xs), names, np.asarray(ws, dtype=np.float64)


def eval_losses_from_log_history(log_history: Sequence[Mapping[str, Any]],
                                 domains: Sequence[str], prefix: str = "eval"
                                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{domain: (steps, losses)}`` from the ``<prefix>_<domain>_loss`` log entries (finite only)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for d in domains:
        key = f"{prefix}_{d}_loss"
        pts = [(int(e.get("step", 0)), float(e[key])) for e in log_history
               if key in e and isinstance(e[key], (int, float)) and math.isfinite(float(e[key]))]
        if pts:
            s, v = zip(*pts)
            out[d] = (np.asarray(s), np.asarray(v))
    return out


def plot_mixture(log_history: Sequence[Mapping[str, Any]] | None = None,
                 path: str | os.PathLike = "mixture.png", *, live: Any = None,
                 samples_per_step: int | None = None, domains: Sequence[str] | None = None,
                 title: str | None = None, prefix: str = "eval", dpi: int = 120) -> Path:
    """Draw the weights (stacked area) and per-domain eval loss; write a PNG; return its path.

    Args:
        log_history: ``trainer.state.log_history`` (or a ``trainer_state.json``'s).
        path: the PNG to write (atomically).
        live: a LiveMixture (or its history list): the exact weights history
            replaces the logged weights in the top panel.
        samples_per_step: with ``live``, sequences per optimizer step (global), to
            draw the history against steps like the eval losses.
        domains: the components to draw (default: all found).
        title: the figure title.
        prefix: the eval metric prefix (``eval_<domain>_loss``).
    """
    require("matplotlib", "plotting", "drawing mixture pictures")
    import matplotlib

    matplotlib.use("Agg")   # files only: never a display
    import matplotlib.pyplot as plt

    from ._io import atomic_path

    log_history = list(log_history or [])
    if live is not None:
        x, names, w = weights_from_history(live, samples_per_step=samples_per_step,
                                           until=_last_step(log_history) if samples_per_step
                                           else None)
        if domains is not None:
            idx = [names.index(d) for d in domains if d in names]
            names, w = [names[i] for i in idx], w[:, idx]
        x_label = "optimizer step" if samples_per_step else "sample"
    else:
        x, names, w = weights_from_log_history(log_history, domains)
        x_label = "optimizer step"
    if len(x) == 0 or not names:
        raise HFMixtureError("Nothing to draw: the log history holds no 'mixture/<component>' "
                             "entries (add a mixture callback) and no LiveMixture was given.")
    losses = eval_losses_from_log_history(log_history, names, prefix)
    rows = 2 if losses else 1
    fig, axes = plt.subplots(rows, 1, figsize=(9, 3.2 * rows + 0.6), sharex=bool(
        losses and (live is None or samples_per_step)), squeeze=False)
    colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    ax = axes[0][0]
    if live is None and len(x) > 1:
        # logged weights are samples of a step function: hold each until the next log
        x = np.repeat(x, 2)[1:]
        w = np.repeat(w, 2, axis=0)[:-1]
    ax.stackplot(x, w.T, labels=names, colors=[colors(i) for i in range(len(names))],
                 alpha=0.85)
    ax.set_ylim(0, 1)
    ax.set_ylabel("weight")
    ax.set_title(title or "Mixture weights")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
    if rows == 2:
        lax = axes[1][0]
        for i, d in enumerate(names):
            if d in losses:
                lax.plot(*losses[d], marker="o", ms=3, label=d, color=colors(i))
        lax.set_ylabel("eval loss")
        lax.set_title("Per-domain held-out loss")
        lax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
                   frameon=False)
        lax.set_xlabel(x_label if live is None or samples_per_step else "optimizer step")
    else:
        ax.set_xlabel(x_label)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return out


def _last_step(log_history: Sequence[Mapping[str, Any]]) -> float | None:
    steps = [e.get("step") for e in log_history if isinstance(e.get("step"), (int, float))]
    return float(max(steps)) if steps else None
