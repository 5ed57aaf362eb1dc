"""How fast the mixture sampler delivers packed sequences, against the alternatives, in one run.

    python benchmarks/sampler.py [--seconds 3] [--rounds 3] [--batch-size 8] [--seq-len 2048]

Data: four clusters of the bundled playground corpus (its seven sources grouped
round-robin), tokenized with the playground tokenizer; synthetic token ids when
the playground file is absent (or with ``--synthetic``).  Weights .4/.3/.2/.1,
2048-token sequences, batches of 8.  Measured, each for ``--seconds`` seconds,
``--rounds`` times in alternation (the best round counts: the machine is shared):

- ``MixtureDataLoader`` with ``num_workers`` 0 and 2;
- ``datasets.interleave_datasets`` over the same clusters (streaming parquet, the
  same weights) packed into 2048-token sequences, through a torch DataLoader;
- litdata's ``CombinedStreamingDataset`` (same weights, ``TokensLoader`` blocks)
  when litdata is installed;
- raw memory-map slice copies: contiguous 2048-token slices at random offsets
  copied into a batch (pages warmed first) — the ceiling.  Two variants: into a
  uint16 batch (the bare copy), and into the int64 ``input_ids`` + ``labels``
  pair the model consumes.

Then the resume latency at a late position (10M samples decided) and the
weight-switch latency.  The last line is::

    sampler_tokens_per_s=<x> interleave_tokens_per_s=<y> speedup=<x/y> ceiling_fraction=<x/raw>

with ``x`` the sampler with ``num_workers=0`` and ``raw`` the uint16 slice copies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WEIGHTS = (0.4, 0.3, 0.2, 0.1)
CLUSTERS = [f"cluster_{i}" for i in range(4)]


# -- data -------------------------------------------------------------------------------------
def corpus(synthetic: bool, seed: int = 0):
    """(list of token arrays per cluster, vocab size, eos id, description)."""
    from hf_mixture import playground

    if not synthetic and playground.data_file().is_file():
        tok = playground.tokenizer()
        ds = playground.load()
        texts, sources = list(ds["text"]), list(ds["source"])
        # The benchmark needs four realistic clusters, not a clustering: sources, round-robin.
        group = {s: i % 4 for i, s in enumerate(sorted(set(sources)))}
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        docs: list[list[np.ndarray]] = [[] for _ in CLUSTERS]
        for tokens, source in zip(ids, sources):
            if tokens:
                docs[group[source]].append(np.asarray(tokens, dtype=np.uint16))
        return docs, len(tok), tok.eos_token_id, "playground (7 sources -> 4 clusters)"
    rng = np.random.default_rng(seed)
    docs = []
    for _ in CLUSTERS:
        lengths = np.clip(rng.lognormal(5.5, 1.0, 4000).astype(int), 1, 20_000)
        docs.append([rng.integers(1, 8192, n, dtype=np.uint16) for n in lengths])
    return docs, 8192, 0, "synthetic (lognormal doc lengths, median ~245 tokens)"


def build(workdir: Path, synthetic: bool) -> dict:
    """Token store, per-cluster parquet (for datasets) and litdata chunks, made once."""
    from hf_mixture import playground

    marker = workdir / ("built-synthetic.json" if synthetic else "built.json")
    source = playground.data_file()
    # Rebuilt when the playground file changes (or appears/disappears).
    key = f"{source.stat().st_size}-{source.stat().st_mtime_ns}" if source.is_file() else "none"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("key") == key:
            return info
    for sub in ("store", "parquet", "litdata"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hf_mixture.formats.token_store import TokenStoreWriter

    docs, vocab, eos, what = corpus(synthetic)
    with TokenStoreWriter(workdir / "store", vocab_size=vocab, eos_token_id=eos,
                          tokenizer_name="benchmark") as w:
        for name, cluster in zip(CLUSTERS, docs):
            for i, tokens in enumerate(cluster):
                w.add(name, "train", tokens, {"doc": i})
    (workdir / "parquet").mkdir(parents=True)
    for name, cluster in zip(CLUSTERS, docs):
        pq.write_table(pa.table({"tokens": pa.array([d.tolist() for d in cluster],
                                                    type=pa.list_(pa.uint16()))}),
                       workdir / "parquet" / f"{name}.parquet", row_group_size=1000)
    litdata_ok = build_litdata(workdir / "litdata", docs, eos)
    info = {"key": key, "data": what, "eos": int(eos), "tokens": int(sum(len(d) for c in docs for d in c)),
            "docs": int(sum(len(c) for c in docs)), "litdata": litdata_ok}
    marker.write_text(json.dumps(info))
    return info


def build_litdata(folder: Path, docs, eos: int) -> bool:
    try:
        import torch
        from litdata import optimize
        from litdata.streaming.item_loader import TokensLoader
    except ImportError:
        return False
    for name, cluster in zip(CLUSTERS, docs):
        flat = [np.r_[d, eos].astype(np.int32) for d in cluster]

        def emit(i, flat=flat):
            yield torch.from_numpy(flat[i])

        optimize(fn=emit, inputs=list(range(len(flat))), output_dir=str(folder / name),
                 chunk_size=1 << 20, item_loader=TokensLoader(), num_workers=1, verbose=False,
                 start_method="fork")
    return True


# -- measurements -----------------------------------------------------------------------------
def timed(batches, seconds: float, warmup: int = 3) -> tuple[float, float]:
    """(sequences/s, tokens/s) of an iterator of (B, L) batches over ``seconds``."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    seqs = toks = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        batch = next(it)
        ids = batch["input_ids"] if isinstance(batch, dict) else batch
        seqs += ids.shape[0]
        toks += ids.numel() if hasattr(ids, "numel") else ids.size
    return seqs / elapsed, toks / elapsed


def ours(store, seq_len, batch, workers, seed=0):
    from hf_mixture.mixture import Mixture, MixtureDataLoader, MixtureDataset

    mixture = Mixture.from_store(store, dict(zip(CLUSTERS, WEIGHTS)), seed=seed)
    data = MixtureDataset(store, mixture, seq_len=seq_len)
    return MixtureDataLoader(data, batch_size=batch, num_workers=workers)


def raw_batches(store, seq_len, batch, as_int64: bool, seed=0):
    """Contiguous slices at random offsets, cluster by the same weights: the ceiling."""
    import torch

    maps = [store.tokens(c).view(np.ndarray) for c in CLUSTERS]
    sizes = np.array([len(m) - seq_len for m in maps])
    rng = np.random.default_rng(seed)
    while True:
        comps = rng.choice(4, size=batch, p=WEIGHTS)
        starts = (rng.random(batch) * sizes[comps]).astype(np.int64).tolist()
        comps = comps.tolist()
        if as_int64:
            out = np.empty((batch, seq_len), dtype=np.int64)
            for j, (c, s) in enumerate(zip(comps, starts)):
                out[j] = maps[c][s:s + seq_len]
            yield {"input_ids": torch.from_numpy(out), "labels": torch.from_numpy(out.copy())}
        else:
            out = np.empty((batch, seq_len), dtype=store.dtype)
            for j, (c, s) in enumerate(zip(comps, starts)):
                out[j] = maps[c][s:s + seq_len]
            yield out


def interleave_loader(workdir: Path, seq_len: int, batch: int, eos: int):
    """datasets.interleave_datasets over streaming parquet, packed, through a DataLoader."""
    import datasets
    import torch

    parts = [datasets.load_dataset("parquet", data_files=str(workdir / "parquet" / f"{c}.parquet"),
                                   split="train", streaming=True).repeat(None) for c in CLUSTERS]
    mixed = datasets.interleave_datasets(parts, probabilities=list(WEIGHTS), seed=0)

    class Packed(torch.utils.data.IterableDataset):
        def __iter__(self):
            buffer: list[int] = []
            for row in mixed:
                buffer.extend(row["tokens"])
                buffer.append(eos)
                while len(buffer) >= seq_len:
                    ids = torch.tensor(buffer[:seq_len], dtype=torch.int64)
                    del buffer[:seq_len]
                    yield {"input_ids": ids, "labels": ids.clone()}

    return torch.utils.data.DataLoader(Packed(), batch_size=batch, num_workers=0)


def litdata_loader(workdir: Path, seq_len: int, batch: int, workers: int):
    from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset
    from litdata.streaming.item_loader import TokensLoader

    parts = [StreamingDataset(str(workdir / "litdata" / c), item_loader=TokensLoader(seq_len),
                              shuffle=True, seed=0) for c in CLUSTERS]
    combined = CombinedStreamingDataset(parts, weights=list(WEIGHTS), iterate_over_all=False,
                                        seed=0)

    def forever():
        while True:
            for ids in StreamingDataLoader(combined, batch_size=batch, num_workers=workers):
                ids = ids.long()
                yield {"input_ids": ids, "labels": ids.clone()}

    return forever()


def resume_latency(store, seq_len, batch, position=10_000_000):
    """Seconds from a saved state at ``position`` samples to the first batch in hand."""
    from hf_mixture.mixture import Mixture, MixtureDataLoader, MixtureDataset

    mixture = Mixture.from_store(store, dict(zip(CLUSTERS, WEIGHTS)))
    data = MixtureDataset(store, mixture, seq_len=seq_len)
    t = time.perf_counter()
    data.sampler.choose(position)
    decide = time.perf_counter() - t
    text = json.dumps(data.state_dict())
    t = time.perf_counter()
    fresh = MixtureDataset(store, mixture, seq_len=seq_len)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    fresh.load_state_dict(json.loads(text))
    first = next(iter(MixtureDataLoader(fresh, batch_size=batch)))
    resume_s = time.perf_counter() - t
    assert first["input_ids"].shape == (batch, seq_len)
    return resume_s, build_s, decide, len(text)


def switch_latency(store, seq_len, batch, workers):
    """(stale batches after a change, samples until the realized mix is within TV 0.02)."""
    from hf_mixture.mixture import Mixture, MixtureDataLoader, MixtureDataset
    from hf_mixture.mixture.sampler import choose_components, counter_uniform

    mixture = Mixture.from_store(store, dict(zip(CLUSTERS, WEIGHTS)))
    data = MixtureDataset(store, mixture, seq_len=seq_len)
    loader = MixtureDataLoader(data, batch_size=batch, num_workers=workers)
    new = np.array(WEIGHTS[::-1])
    stale = None
    for i, _ in enumerate(loader):
        if i == 5:
            data.live.set_weights(new, reason="switch")
            change_at = data.live.history[-1].sample
        if i == 6:
            # Batch 6 must be drawn with the new weights: compare with the definition.
            u = counter_uniform(mixture.seed, change_at, batch)
            want = choose_components(u, new)
            stale = 0 if np.array_equal(loader.last_keys.comps, want) else 1
            break
    # Statistics of the new mix from the change on (the decisions alone, 1M samples).
    comps, _, _ = data.sampler.choose(1_000_000)
    realized = np.cumsum(np.eye(4, dtype=np.int32)[comps], axis=0) / \
        np.arange(1, len(comps) + 1)[:, None]
    tv = 0.5 * np.abs(realized - new).sum(axis=1)
    above = np.flatnonzero(tv >= 0.02)
    settle = int(above[-1]) + 1 if len(above) else 0
    return stale, settle, loader.rematerialized


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                          "hf_mixture_sampler_bench"))
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best counts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--synthetic", action="store_true", help="synthetic token ids")
    parser.add_argument("--skip-litdata", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from hf_mixture.formats.token_store import TokenStore

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    info = build(workdir, args.synthetic)
    print(f"data: {info['data']}: {info['docs']} docs, {info['tokens']:,} tokens "
          f"(prepared in {time.perf_counter() - t:.1f} s)")
    store = TokenStore(workdir / "store")
    for c in CLUSTERS:  # warm the pages: a first touch costs far more than a read
        int(store.tokens(c).view(np.ndarray).sum())
    L, B = args.seq_len, args.batch_size
    print(f"seq_len={L} batch={B} weights={WEIGHTS} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f} seconds/round={args.seconds} rounds={args.rounds}")

    candidates = {
        "sampler (num_workers=0)": lambda: ours(store, L, B, 0),
        "sampler (num_workers=2)": lambda: ours(store, L, B, 2),
        "raw slices, uint16 batch": lambda: raw_batches(store, L, B, as_int64=False),
        "raw slices, int64 input_ids+labels": lambda: raw_batches(store, L, B, as_int64=True),
        "interleave_datasets + packing": lambda: interleave_loader(workdir, L, B, info["eos"]),
    }
    if info["litdata"] and not args.skip_litdata:
        candidates["litdata CombinedStreamingDataset (num_workers=0)"] = \
            lambda: litdata_loader(workdir, L, B, 0)
        candidates["litdata CombinedStreamingDataset (num_workers=2)"] = \
            lambda: litdata_loader(workdir, L, B, 2)
    elif not info["litdata"]:
        print("litdata: not installed, skipped")
    best: dict[str, tuple[float, float]] = {}
    for r in range(args.rounds):
        for name, make in candidates.items():
            try:
                seqs, toks = timed(make(), args.seconds)
            except Exception as err:  # noqa: BLE001 - a peer failing here is reported, not fatal
                print(f"  {name}: failed ({type(err).__name__}: {err})")
                continue
            if toks > best.get(name, (0, 0))[1]:
                best[name] = (seqs, toks)
        print(f"round {r + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", flush=True)

    raw = best["raw slices, uint16 batch"][1]
    print(f"\n{'loader':52s} {'seq/s':>10s} {'tokens/s':>14s} {'x raw':>7s}")
    for name, (seqs, toks) in best.items():
        print(f"{name:52s} {seqs:10,.0f} {toks:14,.0f} {toks / raw:7.3f}")

    resume_s, build_s, decide_s, state_bytes = resume_latency(store, L, B)
    print(f"\nresume at sample 10,000,000: {resume_s * 1000:.1f} ms from a {state_bytes}-byte "
          f"JSON state to the first batch (dataset construction {build_s * 1000:.0f} ms; deciding "
          f"those 10M samples from scratch takes {decide_s:.2f} s, which resume never does)")
    for workers in (0, 2):
        stale, settle, replaced = switch_latency(store, L, B, workers)
        print(f"weight switch, num_workers={workers}: stale batches after the change = {stale} "
              f"(prefetched batches replaced: {replaced}); realized mix within TV 0.02 of the "
              f"new weights after {settle:,} samples")

    x = best["sampler (num_workers=0)"][1]
    y = best["interleave_datasets + packing"][1]
    print(f"sampler_tokens_per_s={x:.4g} interleave_tokens_per_s={y:.4g} speedup={x / y:.1f} "
          f"ceiling_fraction={x / raw:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
