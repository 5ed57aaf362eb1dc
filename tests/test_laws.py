"""Power laws of loss vs steps and vs model size, and ``hf-mixture fit-laws`` over run folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_mixture.cli import main as cli_main
from hf_mixture.errors import HFMixtureError
from hf_mixture.search.laws import PowerLaw, fit_laws, fit_power_law


def test_power_law_fit_recovers_parameters_and_extrapolates():
    steps = np.array([50, 100, 200, 400, 800, 1600], dtype=float)
    truth = PowerLaw(E=1.8, A=12.0, alpha=0.45, r2=1.0, num_points=0)
    law = fit_power_law(steps, truth(steps))
    assert law.E == pytest.approx(1.8, abs=1e-3)
    assert law.A == pytest.approx(12.0, rel=1e-2)
    assert law.alpha == pytest.approx(0.45, abs=1e-3)
    assert law.r2 > 0.9999
    assert float(law(10_000)) == pytest.approx(float(truth(10_000)), rel=1e-4)


def test_power_law_with_noise_stays_close():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e5, 1e8, 8)
    y = 2.0 + 400.0 * x ** -0.3 + rng.normal(0, 0.003, len(x))
    law = fit_power_law(x, y)
    assert law.alpha == pytest.approx(0.3, abs=0.05)
    assert float(law(1e9)) == pytest.approx(2.0 + 400.0 * 1e9 ** -0.3, abs=0.05)


def test_power_law_needs_three_distinct_points():
    with pytest.raises(HFMixtureError, match="3 or more distinct points, got 2"):
        fit_power_law([10, 20, 20], [3.0, 2.0, 2.0])


def _write_run(root, name, fingerprint, num_params, law: PowerLaw, steps, target_offset=0.0):
    run = root / name
    run.mkdir(parents=True)
    curve = [{"step": int(s), "target": float(law(s)) + target_offset,
              "domains": {"a": float(law(s)), "b": float(law(s)) + 0.5}} for s in steps]
    (run / "metrics.json").write_text(json.dumps({
        "status": "finished", "mixture_fingerprint": fingerprint, "num_params": num_params,
        "curve": curve, "target": curve[-1]["target"]}))
    return run


def test_fit_laws_nests_step_and_size_laws(tmp_path):
    runs = tmp_path / "runs"
    steps = [20, 40, 80, 160]
    # Loss at the final step follows a size law: E(N) = 1.5 + 30 * N ** -0.35.
    sizes = [1e5, 4e5, 1.6e6]
    for i, n in enumerate(sizes):
        E = 1.5 + 30 * n ** -0.35
        _write_run(runs, f"m1-size{i}", "mix1", int(n), PowerLaw(E, 8.0, 0.5, 1, 0), steps)
    _write_run(runs, "m2-size0", "mix2", 100000, PowerLaw(3.0, 8.0, 0.5, 1, 0), steps)
    (runs / "failed-run").mkdir()
    (runs / "failed-run" / "failed.json").write_text('{"status": "failed"}')
    report = fit_laws(runs, predict_steps=10**6)
    assert len(report.step_laws) == 4
    for s in report.step_laws:
        assert s["law"]["alpha"] == pytest.approx(0.5, abs=1e-2)
        assert s["at_steps"] == 10**6
    assert [s["mixture"] for s in report.size_laws] == ["mix1"]  # mix2 has one size only
    size = report.size_laws[0]
    # The step law extrapolates to ~E(N) at 1e6 steps, so the size law recovers alpha ~0.35.
    assert size["law"]["alpha"] == pytest.approx(0.35, abs=0.03)
    text = report.to_text()
    assert "Step laws" in text and "Size laws" in text and "m1-size2" in text
    mean = fit_laws(runs, metric="b")
    assert mean.step_laws[0]["last"] == pytest.approx(report.step_laws[0]["last"] + 0.5)


def test_fit_laws_cli_prints_and_errors(tmp_path, capsys):
    runs = tmp_path / "runs"
    _write_run(runs, "r1", "mix", 1000, PowerLaw(2.0, 5.0, 0.4, 1, 0), [10, 20, 40])
    assert cli_main(["fit-laws", str(runs), "--predict-steps", "400", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["step_laws"][0]["predicted"] == pytest.approx(2.0 + 5.0 * 400 ** -0.4, rel=1e-3)
    short = tmp_path / "short"
    _write_run(short, "r1", "mix", 1000, PowerLaw(2.0, 5.0, 0.4, 1, 0), [10, 20])
    assert cli_main(["fit-laws", str(short)]) == 2
    assert "at 3 or more steps" in capsys.readouterr().err
    assert cli_main(["fit-laws", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["fit-laws", str(tmp_path / "empty")]) == 2
    assert "no finished proxy run" in capsys.readouterr().err


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["curve"][1].update(target="2.5"), "curve[1].target"),
    (lambda m: m["curve"][0]["domains"].update(a="low"), "curve[0].domains['a']"),
    (lambda m: m["curve"][2].update(step="40"), "curve[2].step"),
    (lambda m: m.update(num_params="1000"), "num_params"),
    (lambda m: m.update(curve={"step": 1}), "curve"),
])
def test_a_string_where_a_number_belongs_is_one_sentence(tmp_path, capsys, edit, field):
    runs = tmp_path / "runs"
    run = _write_run(runs, "r1", "mix", 1000, PowerLaw(2.0, 5.0, 0.4, 1, 0), [10, 20, 40])
    m = json.loads((run / "metrics.json").read_text())
    edit(m)
    (run / "metrics.json").write_text(json.dumps(m))
    assert cli_main(["fit-laws", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metrics.json: field " in err, err
    assert f"'{field}'" in err, err
