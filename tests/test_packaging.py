"""The package installs with the layout users expect: callbacks/ and hub_cards/ map into hf_mixture."""

from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    found = set()
    for top, name in (("hf_mixture", "hf_mixture"), ("callbacks", "hf_mixture.callbacks"),
                      ("hub_cards", "hf_mixture.hub_cards")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {found - listed}"
    assert mapping["hf_mixture.callbacks"] == "callbacks"
    assert mapping["hf_mixture.hub_cards"] == "hub_cards"


def test_editable_install_maps_top_level_folders():
    import hf_mixture.callbacks
    import hf_mixture.hub_cards

    assert Path(hf_mixture.callbacks.__file__).resolve().parent == ROOT / "callbacks"
    cards = [p.name for p in importlib.resources.files("hf_mixture.hub_cards").iterdir()]
    assert any(name.endswith(".md") for name in cards), cards


def test_console_script_runs():
    exe = Path(sysconfig.get_path("scripts")) / "hf-mixture"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "hf-mixture" in out.stdout


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("hf_mixture-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hf_mixture/callbacks/__init__.py" in names
    assert any(n.startswith("hf_mixture/hub_cards/") and n.endswith(".md") for n in names)
    assert not any(n.startswith(("callbacks/", "hub_cards/", "tests/")) for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # The fresh venv sees the dependencies of this environment through a .pth line
    # (no .pth of that folder runs there, so the editable hf_mixture is not visible).
    site = subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   text=True).strip()
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    inst = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    probe = (
        "import importlib.resources, hf_mixture, hf_mixture.callbacks, hf_mixture.hub_cards\n"
        "print(hf_mixture.__file__)\n"
        "print(hf_mixture.callbacks.__file__)\n"
        "print(sorted(p.name for p in importlib.resources.files('hf_mixture.hub_cards').iterdir()))\n"
    )
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert str(env_dir) in lines[0] and str(env_dir) in lines[1], lines
    assert ".md" in lines[2]
