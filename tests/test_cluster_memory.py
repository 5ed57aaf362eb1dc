"""Clustering stages whose memory does not grow with k or the number of tasks: the same
results as the obvious in-memory computation."""

from __future__ import annotations

import json
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hf_mixture.clustering import stages


def test_global_sample_equals_sorting_everything(tmp_path):
    """Two passes, one file open at a time == the m smallest (key, text, embedding) over all
    tasks, in that order (content first: never the rows' places in the input)."""
    rng = np.random.default_rng(3)
    (tmp_path / "sample").mkdir()
    everything = []
    for t in range(7):
        n = int(rng.integers(0, 40))
        keys = np.sort(rng.integers(0, 30, n))  # few distinct keys: many ties at the threshold
        rows = rng.permutation(1000)[:n] + 1000 * t
        emb = rng.standard_normal((n, 3)).astype(np.float32)
        table = pa.table({"_key": pa.array(keys, pa.int64()), "_id": [f"d{r}" for r in rows],
                          "emb": pa.array([e.tobytes() for e in emb], pa.binary()),
                          "text": [f"text {r}" for r in rows],
                          "_row": pa.array(rows, pa.int64())})
        pq.write_table(table, tmp_path / "sample" / f"{t:05d}.parquet", row_group_size=5)
        everything += list(zip(keys.tolist(), rows.tolist(), table["_id"].to_pylist(),
                               table["text"].to_pylist(), [e.tobytes() for e in emb]))
    for m in (1, 17, 60, len(everything), len(everything) + 5):
        want = sorted(everything, key=lambda r: (r[0], r[3], r[4]))[:m]
        texts, emb, rows = stages._global_sample(tmp_path, 7, m)
        assert texts == [r[3] for r in want]
        assert rows.tolist() == [r[1] for r in want]
        assert emb.tobytes() == b"".join(r[4] for r in want)


def test_assign_description_sample_is_the_smallest_keys_per_cluster(tmp_path, monkeypatch):
    """The heaps hold (key, row), texts spill to disk: the sample equals the per-cluster
    DESCRIBE_PER_CLUSTER smallest keys with their texts, quality and features."""
    monkeypatch.setattr(stages, "DESCRIBE_PER_CLUSTER", 4)
    monkeypatch.setattr(stages._DescribeSpill, "BATCH", 7)  # several spilled batches
    rng = np.random.default_rng(0)
    n, k, dim = 500, 12, 6
    work = tmp_path
    for sub in ("docs", "emb", "model"):
        (work / sub).mkdir()
    texts = [f"doc {i} " + "x" * int(rng.integers(0, 1500)) for i in range(n)]
    keys = rng.permutation(10 * n)[:n].astype(np.int64)
    quality = rng.random(n)
    pq.write_table(pa.table({"text": texts, "_key": keys, "quality": quality}),
                   work / "docs" / "00000.parquet", row_group_size=100)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb.tofile(work / "emb" / "00000.f32")
    (work / "emb" / "00000.json").write_text(json.dumps({"rows": n, "dim": dim}))
    centroids = rng.standard_normal((k, dim)).astype(np.float32)
    np.save(work / "model" / "centroids.npy", centroids)
    (work / "model" / "model.json").write_text(json.dumps({"backend": "sklearn"}))
    cfg = types.SimpleNamespace(num_threads=1, lexical_weight=0.0, language_weight=0.0,
                                layout_weight=0.0,
                                quality_flags=False)
    stages.AssignClusters(str(work), cfg).run(rank=0)

    with np.load(work / "assign" / "00000.npz") as z:
        labels = z["labels"]
    want = set()
    for c in range(k):
        members = np.flatnonzero(labels == c)
        for i in members[np.argsort(keys[members])][:4]:
            want.add((c, int(keys[i]), texts[i][: stages.DESCRIBE_CHARS], float(quality[i]),
                      emb[i].tobytes()))
    got = pq.read_table(work / "assign" / "00000.sample.parquet")
    assert set(zip(*(got[c].to_pylist() for c in ("cluster", "_key", "text", "quality",
                                                     "feat")))) == want
    assert got.num_rows == len(want)
    assert sorted(p.name for p in (work / "assign").iterdir()) == [
        "00000.npz", "00000.sample.parquet"]  # the spill file is gone


def test_describe_samples_do_not_follow_the_order_of_the_tasks(tmp_path, monkeypatch):
    """Equal keys (copies of a text; here also unequal rows) at the heaps' bound: the rows kept
    are the smallest (key, text, quality, features) whichever task's file comes first."""
    monkeypatch.setattr(stages, "DESCRIBE_PER_CLUSTER", 3)
    rng = np.random.default_rng(1)
    names = ["cluster", "_key", "text", "quality", "feat"]
    tasks = []
    for t in range(2):
        n = 12
        tasks.append(pa.table({
            "cluster": pa.array(rng.integers(0, 2, n), pa.int32()),
            "_key": pa.array(rng.integers(0, 3, n), pa.int64()),
            "text": [f"text {t}-{i}" for i in range(n)],
            "quality": rng.random(n),
            "feat": pa.array([rng.standard_normal(2).astype(np.float32).tobytes()
                              for _ in range(n)], pa.binary())}).select(names))
    got = []
    for order in (tasks, tasks[::-1]):
        (tmp_path / "assign").mkdir(exist_ok=True)
        for t, table in enumerate(order):
            pq.write_table(table, tmp_path / "assign" / f"{t:05d}.sample.parquet",
                           row_group_size=5)
        cluster, texts, quality, feat = stages._reduce_describe_samples(tmp_path, 2, 2, 2)
        got.append((cluster.tolist(), texts, quality.tolist(), feat.tobytes()))
    assert got[0] == got[1]
    everything = sorted(zip(*(pa.concat_tables(tasks)[c].to_pylist() for c in names)),
                        key=lambda r: r)
    want = [r for c in (0, 1) for r in [r for r in everything if r[0] == c][:3]]
    assert got[0][1] == [r[2] for r in want]


def test_task_tokenizer_is_loaded_once_per_process(tmp_path, tiny_tokenizer_path):
    """The write and tokenize stages' tasks share one tokenizer per worker (a fresh load per
    task grew a worker by ~7 MB a task); a changed tokenizer.json is loaded anew."""
    import os
    import shutil

    from hf_mixture.formats.tokenizers import task_tokenizer

    folder = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_path, folder)
    first = task_tokenizer(str(folder))
    assert task_tokenizer(str(folder)) is first
    assert first.backend_tokenizer.encode("hello world").ids
    spec = folder / "tokenizer.json"
    st = spec.stat()
    os.utime(spec, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = task_tokenizer(str(folder))
    assert again is not first
    assert again.backend_tokenizer.encode("hello world").ids == \
        first.backend_tokenizer.encode("hello world").ids
    given = first  # an object is used as it is
    assert task_tokenizer(given) is given
