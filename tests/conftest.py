"""Shared test fixtures: tiny, deterministic, offline.

- ``tiny_tokenizer_path`` / ``tiny_tokenizer``: a byte-level BPE (vocab ~500, eos
  ``<|endoftext|>``) trained with ``tokenizers`` and saved as a
  ``PreTrainedTokenizerFast`` folder (session-scoped: trained once, ~0.1 s).
- ``tiny_texts``: a few hundred short documents from three word-distinct domains.
- ``tiny_text_dataset``: ``datasets.Dataset`` with ``text``, ``source``,
  ``doc_id``, ``quality``, ``cluster_id`` (the domain index).
- ``make_climblab``: writes a folder in the released ClimbLab schema
  (``cluster_<k>/cluster_<k>_<NNN>.tokenized.parquet``; ``tokens`` list<int64>,
  ``token_count`` int64, ``cluster_id`` int64; no clusters.json, no README configs),
  token ids below 256 so any byte-level tokenizer (the tiny one, GPT-2) can read them.
- ``climblab_dir``: one such folder (clusters 1, 2, 3; 2 files each).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

# Tests never touch the network; set before any Hugging Face library reads its config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

EOS = "<|endoftext|>"
TINY_VOCAB = 512  # the trainer's target; the learned vocabulary may end a little smaller
# Ids the ClimbLab fixture draws from: every byte-level BPE has at least 256 + 1 tokens.
CLIMBLAB_FIXTURE_VOCAB = 256

_DOMAINS = {
    "scripture": [
        "lord",
        "spake",
        "unto",
        "moses",
        "saying",
        "israel",
        "land",
        "children",
        "house",
        "fathers",
        "thou",
        "shalt",
        "hath",
        "begat",
        "days",
        "came",
        "went",
        "said",
        "king",
        "people",
    ],
    "code": [
        "def",
        "return",
        "self",
        "import",
        "class",
        "for",
        "in",
        "range",
        "if",
        "else",
        "none",
        "true",
        "false",
        "print",
        "value",
        "list",
        "dict",
        "args",
        "kwargs",
        "lambda",
        "yield",
    ],
    "dictionary": [
        "noun",
        "verb",
        "adjective",
        "meaning",
        "synonym",
        "plural",
        "usage",
        "obsolete",
        "archaic",
        "sense",
        "definition",
        "entry",
        "term",
        "word",
        "phrase",
        "variant",
    ],
}


def _make_texts(n_per_domain: int = 60, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for source, words in _DOMAINS.items():
        for _ in range(n_per_domain):
            n = rng.randint(8, 40)
            out.append((source, " ".join(rng.choice(words) for _ in range(n)) + "."))
    return out


@pytest.fixture(scope="session")
def tiny_texts() -> list[tuple[str, str]]:
    """``[(source, text), ...]``: 60 documents per domain, three domains, fixed seed."""
    return _make_texts()


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tmp_path_factory, tiny_texts) -> Path:
    """A saved ``PreTrainedTokenizerFast`` folder (byte-level BPE, vocab ~500)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([t for _, t in tiny_texts], trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tiny-bpe"
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_path))


@pytest.fixture
def tiny_text_dataset(tiny_texts):
    """Columns text, source, doc_id, quality, cluster_id (domain index: 0, 1, 2)."""
    import datasets

    sources = list(_DOMAINS)
    return datasets.Dataset.from_dict(
        {
            "text": [t for _, t in tiny_texts],
            "source": [s for s, _ in tiny_texts],
            "doc_id": [f"doc-{i:04d}" for i in range(len(tiny_texts))],
            "quality": [round((i % 10) / 10, 1) for i in range(len(tiny_texts))],
            "cluster_id": [sources.index(s) for s, _ in tiny_texts],
        }
    )


def write_climblab_folder(
    root: Path,
    clusters: dict[int, int] | None = None,
    *,
    files_per_cluster: int = 2,
    vocab_size: int = CLIMBLAB_FIXTURE_VOCAB,
    seed: int = 0,
) -> Path:
    """A folder in the released ClimbLab schema; ``clusters`` maps cluster id -> number of documents."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    clusters = {1: 7, 2: 5, 3: 6} if clusters is None else clusters
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for k, n_docs in clusters.items():
        folder = root / f"cluster_{k}"
        folder.mkdir(exist_ok=True)
        bounds = np.linspace(0, n_docs, files_per_cluster + 1).astype(int)
        for i in range(files_per_cluster):
            n = int(bounds[i + 1] - bounds[i])
            docs = [
                rng.integers(1, vocab_size, size=int(rng.integers(3, 30))).tolist()
                for _ in range(n)
            ]
            table = pa.table(
                {
                    "tokens": pa.array(docs, type=pa.list_(pa.int64())),
                    "token_count": pa.array([len(d) for d in docs], type=pa.int64()),
                    "cluster_id": pa.array([k] * n, type=pa.int64()),
                }
            )
            pq.write_table(table, folder / f"cluster_{k}_{i + 1:03d}.tokenized.parquet")
    return root


@pytest.fixture
def make_climblab(tmp_path) -> Callable[..., Path]:
    """``make_climblab(name="climblab", clusters={1: 7, ...}, files_per_cluster=2, vocab_size=256)``."""

    def make(name: str = "climblab", clusters: dict[int, int] | None = None, **kwargs) -> Path:
        return write_climblab_folder(tmp_path / name, clusters, **kwargs)

    return make


@pytest.fixture
def climblab_dir(make_climblab) -> Path:
    return make_climblab()


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_texts, tiny_tokenizer_path):
    """A token store of the tiny texts, one component per source (20% validation)."""
    import datasets

    from hf_mixture.formats import tokenize_corpus, write_clustered_corpus
    from hf_mixture.formats.tokenizers import load_tokenizer

    root = tmp_path_factory.mktemp("hub")
    sources = sorted({s for s, _ in tiny_texts})
    ds = datasets.Dataset.from_dict({
        "text": [t for _, t in tiny_texts], "source": [s for s, _ in tiny_texts],
        "cluster_id": [sources.index(s) for s, _ in tiny_texts]})
    write_clustered_corpus(ds, root / "corpus", tokenizer=load_tokenizer(tiny_tokenizer_path))
    tokenize_corpus(root / "corpus", root / "store", str(tiny_tokenizer_path),
                    validation_fraction=0.2)
    from hf_mixture.formats import TokenStore

    return TokenStore(root / "store")


# -- a real Slurm -------------------------------------------------------------------------------
SLURM_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "local_slurm.sh"


@pytest.fixture(scope="session")
def real_slurm(tmp_path_factory):
    """A single-node Slurm (munged, slurmctld, slurmd) started by scripts/local_slurm.sh.

    Yields the environment to run Slurm commands with (``SLURM_CONF``); the daemons are
    stopped by their pid files at the end of the session.  Needs root (the script installs
    slurm-wlm and munge with apt-get when missing); skipped elsewhere.
    """
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("a real Slurm needs root (to install and start slurm-wlm)")
    root = Path(tmp_path_factory.mktemp("slurm"))
    env = dict(os.environ, SLURM_PORT="free")
    started = subprocess.run(["bash", str(SLURM_SCRIPT), "start", str(root)], env=env,
                             check=False, capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop", str(root)], check=False, timeout=60)
        pytest.fail(f"scripts/local_slurm.sh start failed: {started.stderr[-2000:]}")
    conf = str(root / "slurm.conf")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # hf_mixture runs sbatch/squeue/sinfo in this process
    try:
        yield {"SLURM_CONF": conf, "dir": root, "partition": "local"}
    finally:
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop", str(root)], check=False, timeout=60)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


def wait_for_slurm_chain(lock: Path, output: Path, timeout: float = 900) -> None:
    """Wait until a submitted chain released its output lock; fail with the Slurm logs."""
    import subprocess
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not lock.exists():
            return
        queue = subprocess.run(["squeue", "-h", "-o", "%F %T"], check=False, capture_output=True, text=True)
        jobs = json.loads(lock.read_text() or "{}").get("jobs", []) if lock.exists() else []
        if lock.exists() and jobs and not any(line.split()[0] in jobs
                                              for line in queue.stdout.splitlines()):
            time.sleep(1)
            if lock.exists():
                break  # the chain ended without its last stage releasing the lock
        time.sleep(2)
    logs = sorted(output.glob("**/slurm_logs/**/*.out")) + sorted(output.glob("**/logs/*/logs/*.log"))
    tails = "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in logs[-6:])
    pytest.fail(f"the Slurm chain did not finish (lock {lock} still there):\n{tails}")
