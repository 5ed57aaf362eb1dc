"""Scaling laws that extrapolate proxy runs: loss vs training steps and vs model size.

The data mixing laws pipeline (Ye et al., 2024) nests three fits: per mixture and
model size, a power law in training steps predicts the loss of a longer run;
across model sizes, a power law in parameters predicts a larger model; the
mixing law (:mod:`hf_mixture.search.predictors`) then maps mixtures to those
predicted losses.  Both power laws have the form

    L(x) = E + A * x ** (-alpha)        (E >= 0, A > 0, alpha > 0)

fitted by :func:`hf_mixture.power_law.fit_power_law` (the law ADO fits too) with
the bounds of :data:`FIT_BOUNDS`.  Each proxy run records its eval
losses at several steps (``metrics.json`` field ``curve``), so one run gives a
step curve; runs of the same mixture at three or more model sizes give a size
curve.

>>> import numpy as np
>>> s = np.array([100, 200, 400, 800, 1600.])
>>> law = fit_power_law(s, 2.0 + 30.0 * s ** -0.5, **FIT_BOUNDS)
>>> round(law.E, 3), round(law.A, 2), round(law.alpha, 3)
(2.0, 30.0, 0.5)
>>> round(float(law(6400)), 4)
2.375
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HFMixtureError
from ..power_law import PowerLaw, fit_power_law

__all__ = ["FIT_BOUNDS", "LawsReport", "PowerLaw", "collect_runs", "fit_laws", "fit_power_law"]


# The law and its fit are hf_mixture.power_law's (ADO fits the same law); the bounds here are
# wider than ADO's: E need not stay below the lowest loss, alpha may reach 10, least squares.
FIT_BOUNDS = {"max_alpha": 10.0, "e_below_min": False, "robust": False, "max_evaluations": 20000}


# -- over a folder of proxy runs ---------------------------------------------------------
def collect_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished proxy run under ``runs_dir`` (its ``metrics.json``), sorted by folder."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise HFMixtureError(f"Runs folder '{root}' does not exist.")
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HFMixtureError(f"{path} is not valid JSON ({err}).") from None
        if not isinstance(data, dict) or data.get("status") != "finished":
            continue
        check_metrics(data, path)
        data["_path"] = str(path.parent)
        runs.append(data)
    return runs


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number_or_none(v: Any, path: Path, name: str) -> None:
    if v is not None and not _is_number(v):
        raise HFMixtureError(f"{path}: field '{name}' is {v!r}, not a number.")


def check_metrics(data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A finished proxy run's ``metrics.json`` as the laws and the search read it, or one
    sentence naming the file and the field: numbers where numbers belong, a curve of
    ``{step, target, domains}`` points."""
    path = Path(path)
    for name in ("target", "mean_domain_loss", "worst_domain_loss", "train_loss", "seconds",
                 "tokens_per_second"):
        _number_or_none(data.get(name), path, name)
    for name in ("num_params", "steps", "tokens"):
        v = data.get(name)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise HFMixtureError(f"{path}: field '{name}' is {v!r}, not an integer >= 0.")
    fp = data.get("mixture_fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise HFMixtureError(f"{path}: field 'mixture_fingerprint' is {fp!r}, not a string.")
    _check_domains(data.get("domains"), path, "domains")
    curve = data.get("curve")
    if curve is None:
        return data
    if not isinstance(curve, list):
        raise HFMixtureError(f"{path}: field 'curve' is {type(curve).__name__}, not a list of "
                             "{step, target, domains} points.")
    for i, point in enumerate(curve):
        if not isinstance(point, dict):
            raise HFMixtureError(f"{path}: field 'curve[{i}]' is {point!r}, not a "
                                 "{step, target, domains} mapping.")
        step = point.get("step")
        if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
            raise HFMixtureError(f"{path}: field 'curve[{i}].step' is {step!r}, not an "
                                 "integer >= 0.")
        _number_or_none(point.get("target"), path, f"curve[{i}].target")
        _check_domains(point.get("domains"), path, f"curve[{i}].domains")
    return data


def _check_domains(domains: Any, path: Path, name: str) -> None:
    if domains is None:
        return
    if not isinstance(domains, dict):
        raise HFMixtureError(f"{path}: field '{name}' is {type(domains).__name__}, not a "
                             "mapping of domain names to losses.")
    for key, v in domains.items():
        _number_or_none(v, path, f"{name}[{key!r}]")


@dataclass
class LawsReport:
    """Fitted laws per run (steps) and per mixture (model size), with predictions."""

    metric: str
    predict_steps: int | None
    predict_params: float | None
    step_laws: list[dict[str, Any]] = field(default_factory=list)
    size_laws: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        """Plain-text tables of the fitted parameters and predictions."""
        at = f"L({self.predict_steps} steps)" if self.predict_steps else "L(last step)"
        lines = [f"Step laws of {self.metric!r}: L(s) = E + A * s^-alpha, one per run", ""]
        head = f"{'run':<28} {'params':>10} {'steps':>7} {'E':>8} {'A':>9} {'alpha':>7} " \
               f"{'r2':>6} {'last':>8} {at:>16}"
        lines += [head, "-" * len(head)]
        for s in self.step_laws:
            lines.append(
                f"{s['run']:<28} {s['num_params']:>10} {s['steps']:>7} {s['law']['E']:>8.4f} "
                f"{s['law']['A']:>9.3f} {s['law']['alpha']:>7.3f} {s['law']['r2']:>6.3f} "
                f"{s['last']:>8.4f} {s['predicted']:>16.4f}")
        if self.size_laws:
            at_n = f"L({self.predict_params:.3g} params)" if self.predict_params else "L(largest)"
            lines += ["", f"Size laws: L(N) = E + A * N^-alpha over {at}, one per mixture", ""]
            head = f"{'mixture':<18} {'sizes':>5} {'E':>8} {'A':>10} {'alpha':>7} {'r2':>6} " \
                   f"{at_n:>18}"
            lines += [head, "-" * len(head)]
            for s in self.size_laws:
                lines.append(
                    f"{s['mixture']:<18} {s['num_sizes']:>5} {s['law']['E']:>8.4f} "
                    f"{s['law']['A']:>10.3f} {s['law']['alpha']:>7.3f} {s['law']['r2']:>6.3f} "
                    f"{s['predicted']:>18.4f}")
        else:
            lines += ["", "No size law: no mixture was trained at 3 or more model sizes."]
        return "\n".join(lines) + "\n"


def _curve(run: dict[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = [], []
    for point in run.get("curve") or []:
        if metric in ("target",):
            v = point.get("target")
        elif metric in ("mean", "worst"):
            d = point.get("domains") or {}
            vals = [x for x in d.values() if x is not None]
            v = (float(np.mean(vals)) if metric == "mean" else float(np.max(vals))) if vals else None
        else:
            v = (point.get("domains") or {}).get(metric)
        if v is not None and point.get("step", 0) > 0 and math.isfinite(v):
            steps.append(point["step"])
            values.append(v)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def fit_laws(runs_dir: str | Path, *, metric: str = "target", predict_steps: int | None = None,
             predict_params: float | None = None) -> LawsReport:
    """Fit a step law per finished run and a size law per mixture seen at >= 3 model sizes.

    ``metric``: ``"target"`` (the search target), ``"mean"``/``"worst"`` of the
    per-domain validation losses, or one domain's name.  Predictions are at
    ``predict_steps`` (default: each run's last step) and ``predict_params``
    (default: the largest size trained).

    >>> print(fit_laws("search_out/runs").to_text())      # doctest: +SKIP
    """
    runs = collect_runs(runs_dir)
    if not runs:
        raise HFMixtureError(f"Runs folder '{runs_dir}' holds no finished proxy run "
                             "(no metrics.json with status 'finished').")
    if predict_steps is not None and predict_steps < 1:
        raise HFMixtureError(f"--predict-steps must be >= 1, got {predict_steps}.")
    if predict_params is not None and predict_params <= 0:
        raise HFMixtureError(f"--predict-params must be > 0, got {predict_params}.")
    report = LawsReport(metric, predict_steps, predict_params)
    by_mixture: dict[str, list[tuple[int, float]]] = {}
    too_short = []
    for run in runs:
        steps, values = _curve(run, metric)
        name = Path(run["_path"]).name
        if len(np.unique(steps)) < 3:
            too_short.append(name)
            continue
        law = fit_power_law(steps, values, what=f"{metric} in run {name}", x_name="steps",
                            **FIT_BOUNDS)
        at = predict_steps or int(steps.max())
        predicted = float(law(at))
        report.step_laws.append({
            "run": name, "mixture": run.get("mixture_fingerprint") or name,
            "num_params": int(run.get("num_params") or 0), "steps": int(steps.max()),
            "last": float(values[np.argmax(steps)]), "law": law.to_dict(),
            "predicted": predicted, "at_steps": at,
        })
        by_mixture.setdefault(run.get("mixture_fingerprint") or name, []).append(
            (int(run.get("num_params") or 0), predicted))
    if not report.step_laws:
        raise HFMixtureError(
            f"No run under '{runs_dir}' recorded {metric!r} at 3 or more steps (e.g. "
            f"{too_short[0]}); fitting laws needs eval losses at >= 3 step counts "
            "(raise eval_points)."
        )
    for mixture, points in by_mixture.items():
        sizes: dict[int, list[float]] = {}
        for n, v in points:
            if n > 0:
                sizes.setdefault(n, []).append(v)
        if len(sizes) < 3:
            continue
        xs = np.array(sorted(sizes), dtype=np.float64)
        ys = np.array([np.mean(sizes[int(n)]) for n in xs])
        law = fit_power_law(xs, ys, what=f"{metric} vs model size for mixture {mixture}",
                            x_name="model sizes", **FIT_BOUNDS)
        at_n = predict_params or float(xs.max())
        report.size_laws.append({"mixture": mixture, "num_sizes": len(xs), "law": law.to_dict(),
                                 "sizes": xs.tolist(), "losses": ys.tolist(),
                                 "predicted": float(law(at_n)), "at_params": at_n})
    return report
