"""The released ClimbLab and ClimbMix layouts, read as they are, without reading what is not needed.

Fixtures follow what is known of the real repositories: ClimbLab's one-based folders
``cluster_1`` ... ``cluster_20`` of ``cluster_<k>_<NNN>.tokenized.parquet`` with GPT-2-style ids
in ``tokens`` plus ``token_count`` -- some shards without ``cluster_id``, some with it, int32 and
int64 ids mixed, several row groups -- and ClimbMix's root-level ``part_<N>.tokenized.jsonl``
with rows ``{cluster_id, tokens, token_count}``.  A local fsspec filesystem that counts every
byte read stands in for ``HfFileSystem`` (same calls: ``find``, ``open`` with ``block_size``,
``cat_file``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from hf_mixture import cli
from hf_mixture.errors import HFMixtureError
from hf_mixture.formats import TokenStore
from hf_mixture.formats.inspect import inspect_path
from hf_mixture.formats.tokenize import tokenize

VOCAB, EOS = 50257, 50256


class _Counted:
    """A file object that adds every byte it returns to its filesystem's counter."""

    def __init__(self, f, fs, path):
        self._f, self._fs, self._path = f, fs, path

    def read(self, n=-1):
        data = self._f.read(n)
        self._fs.bytes_read[self._path] += len(data)
        return data

    def readline(self, *a):
        data = self._f.readline(*a)
        self._fs.bytes_read[self._path] += len(data)
        return data

    def __iter__(self):
        return iter(self.readline, b"")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


class CountingFS(LocalFileSystem):
    cachable = False  # a fresh counter per test

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.bytes_read: Counter = Counter()

    def _open(self, path, mode="rb", block_size=None, **kw):
        return _Counted(super()._open(path, mode, block_size=block_size, **kw), self, path)

    def cat_file(self, path, start=None, end=None, **kw):
        data = super().cat_file(path, start=start, end=end, **kw)
        self.bytes_read[self._strip_protocol(path)] += len(data)
        return data


def _climblab(root: Path, n_clusters: int = 20, docs: int = 40, length: int = 6000,
              mismatch: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    for k in range(1, n_clusters + 1):
        folder = root / f"cluster_{k}"
        folder.mkdir(parents=True)
        tokens = [np.append(rng.integers(0, EOS, length - 1), EOS) for _ in range(docs)]
        width = pa.int32() if k % 2 else pa.int64()  # shards differ in int width
        cols = {"tokens": pa.array([t.tolist() for t in tokens], pa.list_(width)),
                "token_count": pa.array([len(t) for t in tokens], pa.int64())}
        if k % 3 == 0:  # some shards carry cluster_id (one of them the wrong one)
            cols["cluster_id"] = pa.array([mismatch if k == 3 and mismatch is not None else k]
                                          * docs, pa.int64())
        pq.write_table(pa.table(cols), folder / f"cluster_{k}_001.tokenized.parquet",
                       row_group_size=10)  # several row groups
    return root


@pytest.fixture
def climblab(tmp_path) -> Path:
    return _climblab(tmp_path / "ClimbLab")


def test_inspect_reads_footers_and_token_counts_only(climblab):
    fs = CountingFS()
    info = inspect_path(str(climblab), filesystem=fs)
    assert [c["name"] for c in info["components"]] == [f"cluster_{k}" for k in range(1, 21)]
    assert info["docs"] == 20 * 40 and info["tokens"] == 20 * 40 * 6000
    total = sum(p.stat().st_size for p in climblab.rglob("*.parquet"))
    read = sum(fs.bytes_read.values())
    assert 0 < read < 0.01 * total, (read, total)


def test_store_from_two_of_twenty_clusters_reads_nothing_of_the_others(climblab, tmp_path):
    fs = CountingFS()
    result = tokenize(str(climblab), tmp_path / "store", vocab_size=VOCAB, eos_id=EOS,
                      clusters=[2, 7], filesystem=fs, validation_fraction=0.1)
    store = TokenStore(result.path)
    assert store.components == ["cluster_2", "cluster_7"]
    touched = {Path(p).parent.name for p in fs.bytes_read}
    assert touched == {"cluster_2", "cluster_7"}, touched
    # every document ended with GPT-2's EOS: stripped (the sampler inserts it), and recorded
    assert store.num_tokens("cluster_2") + store.num_tokens("cluster_2", "validation") \
        == 40 * 5999
    assert store.manifest["eos"] == {"documents_ending_with_eos": 80, "stripped": True}
    assert store.manifest["tokenizer"]["vocab_size"] == VOCAB and store.eos_token_id == EOS


def test_max_files_per_cluster(tmp_path, climblab):
    extra = climblab / "cluster_1" / "cluster_1_002.tokenized.parquet"
    pq.write_table(pq.read_table(climblab / "cluster_1" / "cluster_1_001.tokenized.parquet"),
                   extra)
    result = tokenize(str(climblab), tmp_path / "store", vocab_size=VOCAB, eos_id=EOS,
                      clusters=[1], max_files_per_cluster=1)
    store = TokenStore(result.path)
    assert store.num_docs("cluster_1") + store.num_docs("cluster_1", "validation") == 40


def test_mismatching_cluster_id_is_one_sentence_and_no_store(tmp_path, capsys):
    root = _climblab(tmp_path / "bad", n_clusters=3, mismatch=5)
    code = cli.main(["tokenize", str(root), "--output", str(tmp_path / "store"),
                     "--vocab-size", str(VOCAB), "--eos-id", str(EOS)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cluster_3_001.tokenized.parquet row group 0: field 'cluster_id' holds 5, but the " \
           "file is in folder cluster_3/" in err
    assert not (tmp_path / "store").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_ids_outside_the_vocabulary_and_wrong_token_count(tmp_path, capsys):
    root = tmp_path / "c"
    (root / "cluster_1").mkdir(parents=True)
    pq.write_table(pa.table({"tokens": [[1, 2], [3, 70000]], "token_count": [2, 2]}),
                   root / "cluster_1" / "cluster_1_001.tokenized.parquet")
    code = cli.main(["tokenize", str(root), "--output", str(tmp_path / "s"), "--vocab-size",
                     str(VOCAB), "--eos-id", str(EOS)])
    err = capsys.readouterr().err
    assert code == 2 and "row 1: field 'tokens' holds id 70000, outside the vocabulary" in err
    pq.write_table(pa.table({"tokens": [[1, 2], [3, 4]], "token_count": [2, 3]}),
                   root / "cluster_1" / "cluster_1_001.tokenized.parquet")
    code = cli.main(["tokenize", str(root), "--output", str(tmp_path / "s"), "--vocab-size",
                     str(VOCAB), "--eos-id", str(EOS)])
    err = capsys.readouterr().err
    assert code == 2 and "row 1: field 'token_count' is 3, but field 'tokens' holds 2 ids" in err
    assert not (tmp_path / "s").exists()


def test_without_tokenizer_the_vocabulary_must_be_given(climblab, tmp_path):
    with pytest.raises(HFMixtureError, match="needs --vocab-size and --eos-id"):
        tokenize(str(climblab), tmp_path / "s", clusters=[1])


def test_a_non_gpt2_tokenizer_on_climblab_ids_warns(climblab, tmp_path, tiny_tokenizer_path,
                                                   caplog):
    with pytest.raises(HFMixtureError, match="outside the vocabulary"):
        tokenize(str(climblab), tmp_path / "s", str(tiny_tokenizer_path), clusters=[1])
    assert "made with GPT-2's (vocabulary 50257)" in caplog.text


def _climbmix(root: Path, rows: int = 300) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for part in range(2):
        with open(root / f"part_{part}.tokenized.jsonl", "w") as fh:
            for _ in range(rows):
                k = int(rng.integers(0, 5))
                toks = rng.integers(0, EOS, int(rng.integers(5, 50))).tolist() + [EOS]
                fh.write(json.dumps({"cluster_id": k, "tokens": toks,
                                     "token_count": len(toks)}) + "\n")
    return root


def test_climbmix_jsonl_is_streamed_into_cluster_components(tmp_path):
    root = _climbmix(tmp_path / "ClimbMix")
    fs = CountingFS()
    result = tokenize(str(root), tmp_path / "store", vocab_size=VOCAB, eos_id=EOS,
                      filesystem=fs, validation_fraction=0.05)
    store = TokenStore(result.path)
    rows = [json.loads(line) for p in sorted(root.glob("*.jsonl")) for line in open(p)]
    per = Counter(r["cluster_id"] for r in rows)
    assert store.components == [f"cluster_{k}" for k in sorted(per)]
    for k, n in per.items():
        train, val = store.num_docs(f"cluster_{k}"), store.num_docs(f"cluster_{k}", "validation")
        assert train + val == n and val >= 1 and train >= 1
        want = sum(r["token_count"] - 1 for r in rows if r["cluster_id"] == k)  # EOS stripped
        assert store.num_tokens(f"cluster_{k}") + store.num_tokens(f"cluster_{k}", "validation") \
            == want
    # the same run again gives the same split (seeded hash of file:row)
    again = tokenize(str(root), tmp_path / "store2", vocab_size=VOCAB, eos_id=EOS,
                     validation_fraction=0.05)
    assert TokenStore(again.path).num_docs("cluster_0", "validation") == \
        store.num_docs("cluster_0", "validation")
    info = inspect_path(str(root))
    assert info["kind"] == "mixed_corpus" and len(info["files"]) == 2


def test_climbmix_bad_line_names_file_and_line(tmp_path):
    root = _climbmix(tmp_path / "mix", rows=5)
    with open(root / "part_1.tokenized.jsonl", "ab") as fh:
        fh.write(b'{"cluster_id": 1, "tokens": [1, 2\n')
    with pytest.raises(HFMixtureError, match=r"part_1.tokenized.jsonl line 6 is not valid"):
        tokenize(str(root), tmp_path / "s", vocab_size=VOCAB, eos_id=EOS)
    assert not (tmp_path / "s").exists()
