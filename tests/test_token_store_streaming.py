"""The token store writer streams offsets and metadata to disk, and writes the same bytes as before.

The golden hashes below were taken from the writer that held every document's offsets and
metadata in lists until it closed (one ``pa.Table.from_pylist`` + ``pq.write_table`` per split);
:func:`_reference_meta` is that code path, kept here as the obvious reference.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_mixture.errors import HFMixtureError
from hf_mixture.formats import token_store
from hf_mixture.formats.convert import validation_mask
from hf_mixture.formats.token_store import TokenStore, TokenStoreWriter
from hf_mixture.formats.tokenize import tokenize


def golden_corpus(root: Path) -> Path:
    """A deterministic ClimbLab-layout folder: ids, ``token_count``, and metadata of several types.

    Cluster 1 holds more documents than the writer keeps in memory per split, so its metadata
    is spilled in several chunks; some EOS-ended documents (id 0) and nulls are mixed in.
    """
    rng = np.random.default_rng(24)
    for k, n_docs, files in ((1, 21_000, 2), (2, 3_000, 1), (3, 2, 1)):
        folder = root / f"cluster_{k}"
        folder.mkdir(parents=True)
        bounds = np.linspace(0, n_docs, files + 1).astype(int)
        for i in range(files):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            lengths = rng.integers(0, 12, size=hi - lo)
            docs = [rng.integers(0, 300, size=int(n)).tolist() for n in lengths]
            quality = rng.random(hi - lo).round(3).tolist()
            for j in range(0, len(quality), 7):
                quality[j] = None
            table = pa.table({
                "tokens": pa.array(docs, type=pa.list_(pa.int32())),
                "token_count": pa.array(lengths, type=pa.int64()),
                "cluster_id": pa.array([k] * (hi - lo), type=pa.int32()),
                "doc_id": [f"{k}-{j:06d}" for j in range(lo, hi)],
                "quality": pa.array(quality, type=pa.float32()),
                "lang": [("en", "de", None)[j % 3] for j in range(lo, hi)],
            })
            pq.write_table(table, folder / f"cluster_{k}_{i + 1:03d}.tokenized.parquet",
                           row_group_size=4_000)
    return root


def store_hashes(store: Path) -> dict[str, str]:
    """sha256 of every data file of a store, and of its manifest's ``components`` section.

    The rest of the manifest records the input folder's path and mtimes, so it differs per run.
    """
    out = {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in sorted(store.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    manifest = json.loads((store / "manifest.json").read_text())
    # each split's max_id (its largest id, checked against the vocabulary on open) came after
    # the golden hashes: it is checked on its own, the rest of the section against them
    components = {c: {k: ({f: v for f, v in s.items() if f != "max_id"} if isinstance(s, dict)
                          else s) for k, s in entry.items()}
                  for c, entry in manifest["components"].items()}
    out["manifest.components"] = hashlib.sha256(
        json.dumps(components, sort_keys=True).encode()).hexdigest()
    return out
# sha256 of each file, written by the list-holding writer (pyarrow 26.0.1: parquet files
# record the writer's version, so other versions are compared with the reference only).
GOLDEN_PYARROW = "26.0.1"
GOLDEN = {
    'doc_id': {
        'cluster_1/train.bin':
            '6687982ee699862f052c255efec6e36e550c0e70ab26127c55f56b7f929308e3',
        'cluster_1/train.idx':
            '6ea9c13276eb246ebacec39394a81d9d78ebe0bab88e844b4949a6d81c2639df',
        'cluster_1/train.meta.parquet':
            '3f0b02827d1e685dd7803bddab5f169b07af17473fa8ef149e656ba5f95e4071',
        'cluster_1/validation.bin':
            'f8651a5bc4ebf1759b5943afea0ea1186f77573577bdddefc1c428e15680d896',
        'cluster_1/validation.idx':
            '31c4d37e9c091915ea0878d943d4ab48686110e18074889f616cb486c33beed0',
        'cluster_1/validation.meta.parquet':
            '03ca14a6334db30ad18cae5038151522d3360a8f7ec41a307f25922289af86f3',
        'cluster_2/train.bin':
            '136f2b628d643eb75b5cd7fbd14702e0dae0cde56183a50a3b2e1a03806655d3',
        'cluster_2/train.idx':
            'baebaffb278c5d3bc95b5d5163a1ae39256c984911a877979d0e595e887c98d8',
        'cluster_2/train.meta.parquet':
            '7c2902b000bd90ddee203d47b94661b29267a5a15282148781a750436de64088',
        'cluster_2/validation.bin':
            '601820881c40000e091d5a716c9ddd0aa4dec811275b239700b0de2256ed6cff',
        'cluster_2/validation.idx':
            '14ee1af0b7d3f159a0e14d8fb4d4e3b28bf915b293abcd4c8a52ea3839747dc0',
        'cluster_2/validation.meta.parquet':
            '73fcbf1ac4681c3977aad3690c53fa70919a87acec9f0f430ccb989219526ad6',
        'cluster_3/train.bin':
            'b1588345b8955993e863441ce5c1af8e3d78f6045b1e8b5d36b55fe762f8ef46',
        'cluster_3/train.idx':
            '67c78fdc208c019f15520b78bfd1df7820340a7c1eba5d1d37eb2ac0c8c301f2',
        'cluster_3/train.meta.parquet':
            '855d8f05fa4e9dfc6e78b8b94f168a6fe48971ea2d88139dfa067f7a25363dda',
        'cluster_3/validation.bin':
            '645277d7ad4c50c779b27ea94705231d6074b7a401cd4676a5fd5af18cd0f061',
        'cluster_3/validation.idx':
            '96fb5e4a2704b410bbf097c41e40ff8118ef0bc819ccf4344f31f694d12d536a',
        'cluster_3/validation.meta.parquet':
            '9eae7468407b25ac9450326f4a344b06e05e7182569c1c59791b3313177e27ac',
        'manifest.components':
            '5b2ca53b20d68f63b0ec265081b23fe2abd12a5ba938e2e433024e7f88174da7',
    },
    'seed7_frac0.05': {
        'cluster_1/train.bin':
            '2ff6e89f4e4ca4c08b00c189f8d922b08c706ae33968e91d7c1d439c687310c6',
        'cluster_1/train.idx':
            'c361f2585790feca4cd5c2e07351d4051ec562f475f76addae0f0021a680e894',
        'cluster_1/train.meta.parquet':
            '29e1d266b2277c240f3850b4ea54a98dc63903151c2d6de4c712fd9a2f6ad052',
        'cluster_1/validation.bin':
            'c68e975df1cd773bc0c86cf74445ef9a076d9c516d465576b88b962871c1425f',
        'cluster_1/validation.idx':
            '1b59a396ee2c117327905049ad69488f0eca1eab9b2f4d65e4cb25fb601f0660',
        'cluster_1/validation.meta.parquet':
            '5d21ddf7ee80f40d32d81210c944c1f7fbfe179ca4274dba177642c3e1f07510',
        'cluster_2/train.bin':
            'ea33ed4fdfe4cf35f4b200bb320bb90da489fcbb28c52e56a34096b4daec93fa',
        'cluster_2/train.idx':
            '90fed8226e07f7192bc5f8819fde8228b287c99aa8c0ebc3aa1939c5582b97ab',
        'cluster_2/train.meta.parquet':
            'cb817d8a5ce26e20d7ddff70cd348ed347a5bac3fff40a8f53cee819833e8030',
        'cluster_2/validation.bin':
            '3e853945a372b582db9fdd662af223c2d12d30231dfbfa1fd1f9aeba6a7b4e94',
        'cluster_2/validation.idx':
            '99b9aa7758f887c3448f8f23d1d3d0129c17dc7da781060667961dcb37277c17',
        'cluster_2/validation.meta.parquet':
            'c25a8149993b2044f45dd98bfdbac76f3854c9ffb5596a0912908a713d843abd',
        'cluster_3/train.bin':
            'b1588345b8955993e863441ce5c1af8e3d78f6045b1e8b5d36b55fe762f8ef46',
        'cluster_3/train.idx':
            '67c78fdc208c019f15520b78bfd1df7820340a7c1eba5d1d37eb2ac0c8c301f2',
        'cluster_3/train.meta.parquet':
            '855d8f05fa4e9dfc6e78b8b94f168a6fe48971ea2d88139dfa067f7a25363dda',
        'cluster_3/validation.bin':
            '645277d7ad4c50c779b27ea94705231d6074b7a401cd4676a5fd5af18cd0f061',
        'cluster_3/validation.idx':
            '96fb5e4a2704b410bbf097c41e40ff8118ef0bc819ccf4344f31f694d12d536a',
        'cluster_3/validation.meta.parquet':
            '9eae7468407b25ac9450326f4a344b06e05e7182569c1c59791b3313177e27ac',
        'manifest.components':
            '72adb5ce23223da21ed661f03c9204ffa69bddc276d21243e366401b993d2017',
    },
}
GOLDEN_SETTINGS = {"doc_id": {}, "seed7_frac0.05": {"seed": 7, "validation_fraction": 0.05}}


def _reference_store(corpus: Path, out: Path, fraction: float, seed: int) -> None:
    """The store the list-holding writer made, built the obvious way from every row at once."""
    for folder in sorted(corpus.iterdir()):
        table = pa.concat_tables(pq.read_table(f) for f in sorted(folder.glob("*.parquet")))
        docs = [np.asarray(d, dtype=np.int64) for d in table.column("tokens").to_pylist()]
        docs = [d[:-1] if len(d) and d[-1] == 0 else d for d in docs]  # EOS (id 0) stripped
        meta = table.select(["cluster_id", "doc_id", "quality", "lang"]).to_pylist()
        val = validation_mask([str(v) for v in table.column("doc_id").to_pylist()], fraction, seed)
        (out / folder.name).mkdir(parents=True)
        for split, sel in (("train", ~val), ("validation", val)):
            chosen = [d for d, s in zip(docs, sel) if s]
            rows = [m for m, s in zip(meta, sel) if s]
            (out / folder.name / f"{split}.bin").write_bytes(
                b"".join(d.astype("<u2").tobytes() for d in chosen))
            np.asarray([0, *np.cumsum([len(d) for d in chosen])], dtype=np.int64).tofile(
                out / folder.name / f"{split}.idx")
            pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table(
                {"doc": pa.array(np.arange(0), type=pa.int64())}),
                out / folder.name / f"{split}.meta.parquet")


@pytest.fixture(scope="module")
def golden_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    golden_corpus(root / "corpus")
    for name, settings in GOLDEN_SETTINGS.items():
        tokenize(root / "corpus", root / name, vocab_size=300, eos_id=0, **settings)
    return root


@pytest.mark.parametrize("name", list(GOLDEN_SETTINGS))
def test_tokenize_writes_the_bytes_of_the_list_holding_writer(golden_stores, name):
    got = store_hashes(golden_stores / name)
    settings = {"fraction": 0.01, "seed": 0} | {
        {"validation_fraction": "fraction"}.get(k, k): v for k, v in GOLDEN_SETTINGS[name].items()}
    _reference_store(golden_stores / "corpus", golden_stores / f"{name}.ref", **settings)
    want = store_hashes_files(golden_stores / f"{name}.ref")
    assert {k: v for k, v in got.items() if k != "manifest.components"} == want
    if pa.__version__ == GOLDEN_PYARROW:
        assert got == GOLDEN[name]
    store = TokenStore(golden_stores / name)
    assert store.num_docs("cluster_1") + store.num_docs("cluster_1", "validation") == 21_000
    for component, entry in store.manifest["components"].items():
        for split in ("train", "validation"):
            ids = np.fromfile(golden_stores / name / component / f"{split}.bin", dtype="<u2")
            assert entry[split]["max_id"] == (int(ids.max()) if ids.size else 0)


def store_hashes_files(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the writer itself
def _write_both(tmp_path: Path, docs: list[tuple[str, list[int], dict | None]], batch: bool):
    """Write ``docs`` with the streaming writer and with the reference; return both folders."""
    new, ref = tmp_path / "new", tmp_path / "ref"
    with TokenStoreWriter(new, vocab_size=50, eos_token_id=0, tokenizer_name="t") as w:
        if batch:
            for lo in range(0, len(docs), 5):
                part = docs[lo: lo + 5]
                split = part[0][0]
                assert all(p[0] == split for p in part)
                # the columns: every key a document of the split has
                names = list(dict.fromkeys(k for s, _, m in docs if s == split
                                           for k in (m or {})))
                w.add_batch("c", split, np.asarray([t for _, d, _ in part for t in d], np.int64),
                            np.asarray([len(d) for _, d, _ in part]),
                            {n: [(m or {}).get(n) for _, _, m in part] for n in names})
        else:
            for split, d, m in docs:
                w.add("c", split, d, m)
    (ref / "c").mkdir(parents=True)
    for split in ("train", "validation"):
        chosen = [(d, dict(m or {})) for s, d, m in docs if s == split]
        (ref / "c" / f"{split}.bin").write_bytes(
            b"".join(np.asarray(d, dtype="<u2").tobytes() for d, _ in chosen))
        np.asarray([0, *np.cumsum([len(d) for d, _ in chosen])], dtype=np.int64).tofile(
            ref / "c" / f"{split}.idx")
        rows = [m for _, m in chosen]
        # every field any document has, in order of first appearance (a missing one is null)
        names = list(dict.fromkeys(k for r in rows for k in r))
        pq.write_table(pa.table({n: [r.get(n) for r in rows] for n in names}) if names else
                       pa.table({"doc": pa.array(np.arange(len(rows)), type=pa.int64())}),
                       ref / "c" / f"{split}.meta.parquet")
    return new, ref


def _same_files(new: Path, ref: Path) -> None:
    for f in sorted((ref / "c").iterdir()):
        assert (new / "c" / f.name).read_bytes() == f.read_bytes(), f.name
    assert sorted(p.name for p in (new / "c").iterdir()) == sorted(
        p.name for p in (ref / "c").iterdir())  # no spill files left behind


@pytest.mark.parametrize("batch", [False, True])
def test_metadata_types_drifting_across_spilled_chunks(tmp_path, monkeypatch, batch):
    """Chunk types inferred one by one unify to what one inference over all rows gives."""
    monkeypatch.setattr(token_store, "META_CHUNK", 5)
    docs = []
    for i in range(40):
        m = {"a": None if i < 10 else (i if i < 25 else i + 0.5),  # null, then int, then float
             "s": None if i % 9 else f"s{i}", "n": None}
        if i % 4 == 0:
            m["extra"] = 1  # not in the first row: dropped, as from_pylist does
        if i % 6 == 1:
            del m["s"]  # missing: null
        docs.append(("train" if (i // 5) % 3 else "validation", list(range(i % 7)), m))
    _same_files(*_write_both(tmp_path, docs, batch))


def test_no_metadata_and_empty_documents(tmp_path, monkeypatch):
    monkeypatch.setattr(token_store, "META_CHUNK", 3)
    docs = [("train", [1] * (i % 3), {} if i == 0 else {"x": i}) for i in range(11)]
    _same_files(*_write_both(tmp_path, docs, False))  # first row has no keys: a doc index


def test_metadata_goes_to_disk_as_it_fills(tmp_path, monkeypatch):
    monkeypatch.setattr(token_store, "META_CHUNK", 100)
    monkeypatch.setattr(token_store, "_OFFSETS_CHUNK", 64)
    w = TokenStoreWriter(tmp_path / "s", vocab_size=50, eos_token_id=0, tokenizer_name="t")
    for i in range(5_000):
        w.add("c", "train", [i % 50, 1], {"i": i})
    split = w._splits[("c", "train")]
    assert split._buffered < 100 and len(split._offsets) < 64  # held in memory: bounded
    assert not (tmp_path / "s").exists()
    idx = w._tmp / "c" / "train.idx"
    # on disk already, but for the last chunk and the file object's own buffer (8 KiB)
    assert idx.stat().st_size >= 8 * (5_000 - 64) - 8192
    assert list((w._tmp / "c" / ".train.meta.spill").glob("*.arrow"))
    w.close()
    store = TokenStore(tmp_path / "s")
    assert store.metadata("c").column("i").to_pylist() == list(range(5_000))
    assert store.offsets("c").tolist() == list(range(0, 10_001, 2))


def test_incompatible_metadata_types_fail_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(token_store, "META_CHUNK", 2)
    with pytest.raises(HFMixtureError, match="metadata field"):
        with TokenStoreWriter(tmp_path / "s", vocab_size=50, eos_token_id=0,
                              tokenizer_name="t") as w:
            for v in (1, 2, "three", "four"):
                w.add("c", "train", [1], {"v": v})
    assert not list(tmp_path.iterdir())


def test_add_batch_checks_its_input(tmp_path):
    with TokenStoreWriter(tmp_path / "s", vocab_size=50, eos_token_id=0, tokenizer_name="t",
                          ) as w:
        with pytest.raises(HFMixtureError, match=r"f.parquet row 12: .* id 77"):
            w.add_batch("c", "train", np.array([1, 2, 77]), np.array([2, 1]), where="f.parquet",
                        rows=[11, 12])
        with pytest.raises(HFMixtureError, match="sum to their number"):
            w.add_batch("c", "train", np.array([1, 2]), np.array([3]))
        with pytest.raises(HFMixtureError, match="'m' has 1 values for 2 documents"):
            w.add_batch("c", "train", np.array([1, 2]), np.array([1, 1]), {"m": [1]})
        w.add_batch("c", "train", np.array([1, 2]), np.array([1, 1]), {"m": [1, 2]})
    assert TokenStore(tmp_path / "s").num_docs("c") == 2


# ----------------------------------------------------------------------------- conversion helpers
@pytest.mark.parametrize("fraction", [0.0, 1e-9, 0.3, 0.999999])
def test_holdout_equals_validation_mask_for_any_chunking(fraction):
    from hf_mixture.formats.convert import Holdout

    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 3, 50):
        keys = [f"k{i}" for i in range(n)]
        want = validation_mask(keys, fraction, seed=5)
        cuts = sorted({0, n, *rng.integers(0, n + 1, size=4).tolist()})
        h = Holdout(fraction, seed=5)
        for lo, hi in itertools.pairwise(cuts):
            h.scan(keys[lo:hi])
        got = [h.mask(keys[lo:hi], lo) for lo, hi in itertools.pairwise(cuts)]
        assert (np.concatenate(got) if got else np.zeros(0, bool)).tolist() == want.tolist()


def test_strip_eos_flat_equals_strip_eos():
    from hf_mixture.formats.convert import strip_eos, strip_eos_flat

    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 4, size=int(n)) for n in rng.integers(0, 5, size=200)]
    want, n_want = strip_eos(docs, eos=0)
    values, lengths, n = strip_eos_flat(
        np.concatenate(docs), np.asarray([len(d) for d in docs]), eos=0)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    assert n == n_want
    assert [values[a:b].tolist() for a, b in itertools.pairwise(bounds)] == [d.tolist() for d in want]
