"""``datasets.load_dataset`` on folders hf_mixture writes (or reads) never returns stale rows.

datasets 5 caches a local folder with README ``configs:`` by its *name* and a hash of the
config entries (formats/hubstyle.py says exactly what).  Each test has its own
``HF_DATASETS_CACHE`` and loads both folders in one process, as a user would.
"""

from __future__ import annotations

import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_mixture.formats import write_clustered_corpus
from hf_mixture.formats.hubstyle import STAMP_PREFIX, config_data_files, load_folder


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    datasets.disable_progress_bars()
    yield cache
    datasets.enable_progress_bars()


def _corpus(n_per_cluster: int, offset: int = 0) -> datasets.Dataset:
    ids = [k for k in range(3) for _ in range(n_per_cluster)]
    return datasets.Dataset.from_dict({
        "tokens": [[offset + i, 1, 2] for i in range(len(ids))],
        "cluster_id": ids,
    })


def _rows(path, config):
    return datasets.load_dataset(str(path), config, split="train")


def test_plain_configs_folder_reproduces_the_stale_cache(tmp_path):
    """The minimal reproduction: without a stamp, datasets serves the first folder's rows."""
    for name, n in (("A", 100), ("B", 10)):
        d = tmp_path / name / "d"
        (d / "data").mkdir(parents=True)
        pq.write_table(pa.table({"x": list(range(n))}), d / "data" / "a.parquet")
        (d / "README.md").write_text(
            "---\nconfigs:\n- config_name: c1\n  data_files:\n  - split: train\n"
            "    path: data/*.parquet\n---\n")
    assert len(_rows(tmp_path / "A" / "d", "c1")) == 100
    # datasets' own behaviour, kept here so a fixed datasets release shows up as a failure
    assert len(_rows(tmp_path / "B" / "d", "c1")) == 100
    # our reader of folders we did not write resolves them to their files: fresh
    assert len(load_folder(tmp_path / "B" / "d", "c1", "train")) == 10


def test_same_folder_name_different_parents(tmp_path):
    a = write_clustered_corpus(_corpus(20), tmp_path / "A" / "cx")
    b = write_clustered_corpus(_corpus(4, offset=1000), tmp_path / "B" / "cx")
    for config, n_a, n_b in (("cluster_1", 20, 4), ("default", 60, 12)):
        rows_a, rows_b = _rows(a, config), _rows(b, config)
        assert (len(rows_a), len(rows_b)) == (n_a, n_b)
        assert rows_b[0]["tokens"][0] >= 1000 and rows_a[0]["tokens"][0] < 1000


def test_rewritten_in_place_with_overwrite(tmp_path):
    out = tmp_path / "clusters"
    write_clustered_corpus(_corpus(20), out)
    assert len(_rows(out, "cluster_2")) == 20
    write_clustered_corpus(_corpus(5, offset=500), out, overwrite=True)
    again = _rows(out, "cluster_2")
    assert len(again) == 5 and again[0]["tokens"][0] >= 500
    assert len(_rows(out, "default")) == 15


def test_same_content_shares_the_cache(tmp_path):
    """The stamp is content, not path: an identical corpus reuses the cache (nothing to redo)."""
    a = write_clustered_corpus(_corpus(20), tmp_path / "A" / "cx")
    b = tmp_path / "B" / "cx"
    shutil.copytree(a, b)
    first = _rows(a, "cluster_0")
    second = _rows(b, "cluster_0")
    assert first.cache_files[0]["filename"] == second.cache_files[0]["filename"]


def test_cards_carry_the_content_fingerprint(tmp_path):
    import json

    out = write_clustered_corpus(_corpus(3), tmp_path / "c", descriptions={0: "zero"})
    manifest = json.loads((out / "clusters.json").read_text())
    assert len(manifest["fingerprint"]) == 16
    assert sorted(manifest["files"]) == sorted(
        p.relative_to(out).as_posix() for p in out.glob("cluster_*/*.parquet"))
    card = datasets.load_dataset_builder(str(out), "cluster_0").config
    assert card.description == f"{STAMP_PREFIX} {manifest['fingerprint']}: zero"


def test_materialized_mixture_folder_loads_fresh(tmp_path, tiny_store):
    from hf_mixture.hub import stage_mixture_repo
    from hf_mixture.mixture import Mixture

    store = tiny_store
    mix_a = Mixture.from_store(store, weights="natural")
    mix_b = Mixture.from_store(store, weights="uniform")
    a = stage_mixture_repo(mix_a, tmp_path / "A" / "mix", repo_id="me/mix", store=store,
                           materialize_tokens=64 * 8, seq_len=64)
    b = stage_mixture_repo(mix_b, tmp_path / "B" / "mix", repo_id="me/mix", store=store,
                           materialize_tokens=64 * 3, seq_len=64)
    assert len(datasets.load_dataset(str(a), split="train")) == 8
    assert len(datasets.load_dataset(str(b), split="train")) == 3
    stage_mixture_repo(mix_a, b, repo_id="me/mix", store=store, materialize_tokens=64 * 5,
                       seq_len=64, overwrite=True)
    assert len(datasets.load_dataset(str(b), split="train")) == 5


def test_config_data_files_resolves_the_default_and_named_configs(tmp_path):
    out = write_clustered_corpus(_corpus(2), tmp_path / "c")
    builder, files = config_data_files(out, "cluster_1")
    assert builder == "parquet" and [p.split("/")[-2] for p in files["train"]] == ["cluster_1"]
    _, every = config_data_files(out)
    assert len(every["train"]) == 3
    from hf_mixture.errors import HFMixtureError

    with pytest.raises(HFMixtureError, match="no dataset config 'cluster_9'"):
        config_data_files(out, "cluster_9")
