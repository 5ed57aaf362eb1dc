"""Ranks get disjoint shares of each global batch; their union is the single-process sequence."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hf_mixture.formats.token_store import TokenStore, TokenStoreWriter
from hf_mixture.mixture import Mixture, MixtureDataLoader, MixtureDataset

SEQ_LEN = 8
BATCH = 3
CHANGE_AFTER = 2  # every rank changes the weights after this batch
N_BATCHES = 7


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(2)
    path = tmp_path_factory.mktemp("store") / "store"
    with TokenStoreWriter(path, vocab_size=400, eos_token_id=0, tokenizer_name="test") as w:
        for c in range(3):
            for _ in range(50):
                w.add(f"cluster_{c}", "train", rng.integers(1, 400, int(rng.integers(1, 25))),
                      {"cluster_id": c})
    return TokenStore(path)


def run(store, batch_size, rank=0, world_size=1, num_workers=0):
    data = MixtureDataset(store, Mixture.from_store(store, "uniform", seed=5), seq_len=SEQ_LEN)
    loader = MixtureDataLoader(data, batch_size=batch_size, rank=rank, world_size=world_size,
                               num_workers=num_workers)
    ids, keys = [], []
    for i, batch in enumerate(loader):
        ids.append(batch["input_ids"].numpy().copy())
        keys.append(np.stack([loader.last_keys.comps, loader.last_keys.ks], axis=1))
        if i == CHANGE_AFTER:
            data.live.set_weights({"cluster_0": 1, "cluster_2": 3})
        if i + 1 == N_BATCHES:
            break
    return np.stack(ids), np.stack(keys)


def check_union(store, per_rank):
    """Rank r holds rows [r*B, (r+1)*B) of each global batch of the single process."""
    world = len(per_rank)
    single_ids, single_keys = run(store, BATCH * world)
    for r, (ids, keys) in enumerate(per_rank):
        rows = slice(r * BATCH, (r + 1) * BATCH)
        assert np.array_equal(ids, single_ids[:, rows])
        assert np.array_equal(keys, single_keys[:, rows])
    keys = np.concatenate([k.reshape(-1, 2) for _, k in per_rank])
    assert len(np.unique(keys, axis=0)) == len(keys)  # disjoint
    assert len(keys) == single_keys.reshape(-1, 2).shape[0]  # complete


def test_ranks_in_one_process_partition_the_global_batch(store):
    check_union(store, [run(store, BATCH, rank=r, world_size=2) for r in range(2)])
    check_union(store, [run(store, BATCH, rank=r, world_size=3, num_workers=2 if r == 1 else 0)
                        for r in range(3)])


SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch.distributed as dist
    from hf_mixture.formats import TokenStore
    from hf_mixture.mixture import Mixture, MixtureDataLoader, MixtureDataset

    store, out, seq_len, batch, change_after, n = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = MixtureDataset(store, Mixture.from_store(TokenStore(store), "uniform", seed=5),
                          seq_len=seq_len)
    loader = MixtureDataLoader(data, batch_size=batch, num_workers=1 if rank else 0)
    ids, keys = [], []
    for i, b in enumerate(loader):
        ids.append(b["input_ids"].numpy().copy())
        keys.append(np.stack([loader.last_keys.comps, loader.last_keys.ks], axis=1))
        if i == change_after:
            # A collective: rank 1 asks for other weights, rank 0's are broadcast to all.
            data.live.set_weights({"cluster_0": 1, "cluster_2": 3} if rank == 0 else [1, 1, 1])
        if i + 1 == n:
            break
    np.savez(f"{out}/rank{rank}.npz", ids=np.stack(ids), keys=np.stack(keys),
             world=dist.get_world_size())
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_gloo_ranks_under_torchrun(store, tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(store.path), str(tmp_path), str(SEQ_LEN), str(BATCH),
         str(CHANGE_AFTER), str(N_BATCHES)],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_rank = []
    for r in range(2):
        saved = np.load(tmp_path / f"rank{r}.npz")
        assert int(saved["world"]) == 2  # really two processes
        per_rank.append((saved["ids"], saved["keys"]))
    check_union(store, per_rank)
