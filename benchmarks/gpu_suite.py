"""One prepared GPU check: what no CPU can measure, in one command, in under 10 minutes.

    python benchmarks/gpu_suite.py --output runs/gpu --update-docs     # one CUDA GPU
    python benchmarks/gpu_suite.py --output /tmp/gpu-dry --dry-run     # CPU, toy sizes, < 1 min

Sections, each in its own process (a crash, a CUDA error or an out-of-memory stays there)
and time-boxed (``--time-box NAME=SECONDS``); a failing section is recorded with its
one-line error and the others still run:

- ``pretrain_1b``: ``recipes/pretrain_1b.yaml`` (Llama-3.2-1B shape, bf16, SDPA) through
  ``hf_mixture.train.train`` over a synthetic token store written with ``TokenStoreWriter``,
  ``--train-steps`` optimizer steps of one micro-batch each, twice: with static weights and
  with ``LiveMixture.set_weights`` every ``--live-every`` steps.  Tokens/s, MFU (the run's
  ``6 N + 12 L H S`` FLOPs per token against the GPU's dense bf16 peak), peak memory, and
  the share of step time spent in the data loader's ``__next__`` (train's throughput
  callback: the first 2 steps are warm-up).
- ``proxy_62m``: ``--proxy-steps`` steps of the search's GPU proxy (``SearchConfig.gpu()``:
  the ``62m`` preset, bf16) through the search's proxy runner (``run_proxy``); tokens/s.
- ``callbacks_62m``: setting (a) of ``benchmarks/callbacks.py`` (the playground, scored by the
  mean held-out loss over domains) with the ``62m`` shape: natural, uniform and Aioli over 3
  seeds; each run's loss, its differences and the callback's wall-clock share.
- ``embed``: MiniLM docs/s on CUDA with the project's ``SentenceEmbedder`` (the clustering
  defaults, and batches of 256) over the playground's documents.
- ``kmeans``: faiss k-means on 200k x 384 vectors (``benchmarks/clustering.py``'s problem)
  on the GPU and on the CPU in the same run (the GPU half is skipped with a reason when
  faiss sees no GPU).
- ``zero``: one optimizer step with DeepSpeed ZeRO-2 and ZeRO-3 through ``accelerate launch
  --config_file recipes/accelerate/zero{2,3}.yaml --num_processes 1`` (``--zero-recipe``,
  default the 62M proxy recipe: a 1B ZeRO checkpoint is ~18 GB, four of them do not fit the
  box), a checkpoint saved, a second launch resumed from it; loss finite.  Skipped with a
  reason when deepspeed is not importable; with ``--dry-run`` it runs on two CPU ranks
  (``recipes/accelerate/cpu_zero{2,3}.yaml``, ``recipes/tiny_cpu.yaml``).

Writes ``OUTPUT/gpu_suite.json`` and ``OUTPUT/gpu_suite.md`` (device, driver, torch/CUDA
versions, date), each section's log under ``OUTPUT/logs/``; ``--update-docs`` puts the
Markdown between the ``gpu-suite`` markers of ``docs/benchmarks.md``.  Model shapes and
hyper-parameters come from the recipes and the search's proxy registry; ``--dry-run`` runs
the same code paths on the CPU with the shape of ``recipes/tiny_cpu.yaml``, the ``cpu-1m``
proxy preset, 2k x 32 k-means and a handful of documents.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hf_mixture.errors import HFMixtureError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
DOCS = ROOT / "docs" / "benchmarks.md"
MARKERS = ("<!-- gpu-suite:begin -->", "<!-- gpu-suite:end -->")
SECTIONS = ("pretrain_1b", "proxy_62m", "callbacks_62m", "embed", "kmeans", "zero")
# Seconds per section on the GPU; the suite stops starting sections after BUDGET_S, so the
# whole run (stores and environment probe included) stays within the 10 minutes asked for.
TIME_BOX = {"pretrain_1b": 240, "proxy_62m": 100, "callbacks_62m": 150, "embed": 60,
            "kmeans": 60, "zero": 240}
DRY_TIME_BOX = 90
BUDGET_S = 540
FORMAT = "hf_mixture.gpu_suite"


# -- sizes ---------------------------------------------------------------------------------------
def sizes(dry_run: bool) -> dict[str, Any]:
    """How much each section does.  Model shapes are not here: they come from the recipes."""
    if dry_run:
        return {"train_steps": 6, "live_every": 2, "proxy_steps": 8, "embed_docs": 24,
                "kmeans": (2_000, 32, 16, 10), "store_tokens": 40_000,
                "callbacks": {"steps": 20, "seeds": "0", "shape": "cpu-1m", "device": "cpu",
                              "playground_docs": 2000, "batch_size": 4, "seq_len": 64}}
    from clustering import KMEANS_DIM, KMEANS_ITERATIONS, KMEANS_K, KMEANS_N

    # 40 steps of 16 x 2048 tokens: ~0.7 s each on an H100 at 40% MFU, 2 runs in the box.
    # callbacks_62m: setting (a) of benchmarks/callbacks.py with the 62m shape, 3 seeds of
    # natural / uniform / aioli, 600 steps of 16 x 256 tokens each (~5 s per run at 62M).
    return {"train_steps": 40, "live_every": 5, "proxy_steps": 200, "embed_docs": None,
            "kmeans": (KMEANS_N, KMEANS_DIM, KMEANS_K, KMEANS_ITERATIONS),
            "store_tokens": 1_000_000,
            "callbacks": {"steps": 600, "seeds": "0,1,2", "shape": "62m", "device": "cuda",
                          "playground_docs": None, "batch_size": 16, "seq_len": 256}}


def tiny_shape_overrides() -> list[str]:
    """The model shape, sequence length and batch of recipes/tiny_cpu.yaml as overrides."""
    from hf_mixture.config import load_config_file
    from hf_mixture.recipe import load_train_config

    tiny = load_config_file(RECIPES / "tiny_cpu.yaml")
    model = load_train_config(RECIPES / "tiny_cpu.yaml").model_fields  # its shape, expanded
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "max_position_embeddings")
    out = [f"model.{k}={model[k]}" for k in keys]
    # pretrain_1b.yaml states head_dim; the tiny shape leaves it to hidden / heads.
    out.append(f"model.head_dim={model['hidden_size'] // model['num_attention_heads']}")
    out.append(f"data.seq_len={tiny['data']['seq_len']}")
    out.append(f"training.per_device_train_batch_size="
               f"{tiny['training']['per_device_train_batch_size']}")
    out.append("training.use_cpu=true")
    return out


def recipe_vocab(recipe: Path, extra: list[str] = ()) -> int | None:
    from hf_mixture.recipe import load_train_config

    vocab = load_train_config(recipe, list(extra)).model_fields.get("vocab_size", "auto")
    return None if vocab == "auto" else int(vocab)


# -- the synthetic token store -----------------------------------------------------------------
def write_store(path: Path, vocab_size: int, tokens_per_unit: int, seed: int = 0) -> Path:
    """Four components of 1, 2, 3, 4 units of tokens (natural weights .1/.2/.3/.4, so that
    rotating the weights is a real change), lognormal document lengths, a validation split."""
    import numpy as np

    from hf_mixture.formats import TokenStore, TokenStoreWriter

    if (path / "manifest.json").is_file():
        return path
    rng = np.random.default_rng(seed)
    with TokenStoreWriter(path, vocab_size=vocab_size, eos_token_id=0,
                          tokenizer_name="synthetic (gpu_suite)", overwrite=True) as writer:
        for c in range(4):
            for split, budget in (("train", (c + 1) * tokens_per_unit),
                                  ("validation", max(2048, tokens_per_unit // 50))):
                written = 0
                while written < budget:
                    n = int(min(max(rng.lognormal(5.5, 1.0), 8), 8192))
                    writer.add(f"cluster_{c}", split, rng.integers(1, vocab_size, n))
                    written += n
    TokenStore(path)  # validates what was written
    return path


# -- sections (each runs in its own process) -----------------------------------------------------
def _peak_memory() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
                "peak_memory_source": "torch.cuda.max_memory_allocated"}
    import resource

    # Linux reports ru_maxrss in KiB; the CPU has no resettable peak, so this is the process's.
    return {"peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_memory_source": "process max RSS (CPU)"}


def _callbacks(every: int | None):
    """A loss recorder and, with ``every``, a weight change every ``every`` optimizer steps."""
    import numpy as np
    from transformers import TrainerCallback

    class Losses(TrainerCallback):
        def __init__(self):
            self.losses: list[float] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    class LiveWeights(TrainerCallback):
        """Rotate the weights one component along through LiveMixture.set_weights."""

        def __init__(self, live):
            self.live, self.changes, self.seconds = live, 0, 0.0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % every == 0:
                start = time.perf_counter()
                self.live.set_weights(np.roll(self.live.weights_array, 1),
                                      reason=f"gpu_suite step {state.global_step}")
                self.seconds += time.perf_counter() - start
                self.changes += 1

    made: dict[str, Any] = {}

    def losses(live):
        made["losses"] = Losses()
        return made["losses"]

    def live_weights(live):
        made["live"] = LiveWeights(live)
        return made["live"]

    return ([losses, live_weights] if every else [losses]), made


def section_pretrain_1b(ctx: dict[str, Any]) -> dict[str, Any]:
    import gc

    import torch

    from hf_mixture.train import load_train_config, train

    size = ctx["sizes"]
    recipe = RECIPES / "pretrain_1b.yaml"
    steps = size["train_steps"]
    common = [f"data.store={ctx['stores']['pretrain_1b']}", "data.eval_sequences=0",
              f"training.max_steps={steps}",
              # One micro-batch per optimizer step: the recipe's global batch of 256 (16
              # accumulation steps on one GPU) would make a step ~11 s.
              "training.global_batch_size=null", "training.gradient_accumulation_steps=1",
              "training.eval_strategy=no", "training.save_strategy=no",
              f"training.logging_steps={max(1, steps // 4)}", "training.disable_tqdm=true",
              *ctx["shape_overrides"]]
    out: dict[str, Any] = {"recipe": "recipes/pretrain_1b.yaml", "overrides": common[1:],
                           "runs": {}}
    for run, every in (("static", None), ("live_weights", size["live_every"])):
        folder = Path(ctx["work"]) / "pretrain_1b" / run
        cfg = load_train_config(recipe, [*common, f"training.output_dir={folder}"])
        makers, made = _callbacks(every)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = train(cfg, extra_callbacks=makers)
        perf = result.throughput
        losses = made["losses"].losses
        if not losses or not all(math.isfinite(x) for x in losses):
            raise RuntimeError(f"the {run} run logged the losses {losses}: not all finite")
        record = {"tokens_per_second": perf["perf/tokens_per_second"],
                  "step_seconds": perf["perf/step_seconds"],
                  "data_wait_fraction": perf["perf/data_wait_fraction"],
                  "mfu": perf.get("perf/mfu"),
                  "measured_steps": perf["measured_steps"], "last_loss": losses[-1],
                  **_peak_memory()}
        if record["mfu"] is None:
            record["mfu_reason"] = "no dense bf16 peak for this device (pass --peak-tflops)"
        if every:
            record.update(weight_changes=made["live"].changes, every_steps=every,
                          set_weights_seconds=made["live"].seconds,
                          history_entries=len(result.weights_history))
        out["runs"][run] = record
        out.update(num_parameters=result.num_parameters, seq_len=cfg.data.seq_len,
                   micro_batch=int(cfg.training["per_device_train_batch_size"]),
                   tokens_per_step=perf["tokens_per_step"], flops_per_token=perf["flops_per_token"],
                   peak_flops=perf["peak_flops_per_device"],
                   dataloader_num_workers=int(cfg.training.get("dataloader_num_workers", 0)))
        del result
        gc.collect()
        shutil.rmtree(folder, ignore_errors=True)  # the saved 1B model: 5 GB of disk
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    static, live = out["runs"]["static"], out["runs"]["live_weights"]
    out["live_slowdown"] = static["tokens_per_second"] / live["tokens_per_second"] - 1.0
    return out


def section_proxy_62m(ctx: dict[str, Any]) -> dict[str, Any]:
    from hf_mixture.formats import TokenStore
    from hf_mixture.mixture import Component, Mixture
    from hf_mixture.search.config import SearchConfig
    from hf_mixture.search.proxy import run_proxy, settings_dict, write_run_folder
    from hf_mixture.search.search import build_pool
    from hf_mixture.search.target import prepare_target

    steps = ctx["sizes"]["proxy_steps"]
    # The search's own settings: CLIMB's GPU proxies, or the CPU default in a dry run.
    make = SearchConfig if ctx["dry_run"] else SearchConfig.gpu
    base = make()
    config = make(proxy_tokens=steps * base.proxy_settings().sequences_per_step
                  * base.proxy_seq_len,
                  **({"proxy_device": "cpu"} if ctx["dry_run"] else {}))
    settings = config.proxy_settings()
    store = TokenStore(ctx["stores"]["proxy_62m"])
    pool, _ = build_pool(store, config)
    work = Path(ctx["work"]) / "proxy"
    target = prepare_target("mean", store, work, seq_len=settings.seq_len)
    weights = pool.weights()
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    mixture = Mixture([Component(c.name, c.query, weight=weights[c.name])
                       for c in pool.components], seed=config.seed)
    spec = {"store": str(Path(store.path).resolve()), "pool": pool.to_dict(),
            "proxy": settings_dict(settings), "target": target.to_dict(), "seed": config.seed,
            "round": None, "index": None, "weights": dict(weights)}
    write_run_folder(run_dir, spec, mixture)
    result = run_proxy(run_dir)
    if result["status"] != "finished":
        raise RuntimeError(f"the proxy run failed: {result['error']}")
    if not math.isfinite(result["train_loss"]):
        raise RuntimeError(f"the proxy's training loss is {result['train_loss']}")
    return {"model": settings.model, "num_parameters": result["num_params"],
            "steps": result["steps"], "tokens": result["tokens"], "seq_len": settings.seq_len,
            "batch_size": settings.batch_size, "bf16": settings.bf16, "device": result["device"],
            "seconds": result["seconds"], "tokens_per_second": result["tokens_per_second"],
            "train_loss": result["train_loss"], "eval_points": len(result["curve"])}


def section_callbacks_62m(ctx: dict[str, Any]) -> dict[str, Any]:
    """Setting (a) of benchmarks/callbacks.py (the playground, mean held-out loss) at 62M."""
    import importlib.util

    size = ctx["sizes"]["callbacks"]
    spec = importlib.util.spec_from_file_location("bench_callbacks",
                                                  Path(__file__).parent / "callbacks.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    work = Path(ctx["work"]) / "callbacks"
    argv = ["--settings", "a", "--runs", "natural,uniform,aioli", "--seeds", size["seeds"],
            "--steps", str(size["steps"]), "--eval-steps", str(max(size["steps"] // 6, 1)),
            "--shape", size["shape"], "--device", size["device"], "--jobs", "1",
            "--threads", "4", "--batch-size", str(size["batch_size"]),
            "--seq-len", str(size["seq_len"]), "--work-dir", str(work)]
    if size["playground_docs"]:
        argv += ["--playground-docs", str(size["playground_docs"])]
    bench.main(argv)
    results = json.loads((work / "results.json").read_text())
    summary = results["summary"]["a"]
    runs = results["runs"]
    return {"shape": size["shape"], "num_parameters": runs[0]["parameters"],
            "steps": size["steps"], "seeds": size["seeds"],
            "runs": {n: {"mean_loss": v["value"], "sd": v["sd"], "vs_natural": v["vs_natural"],
                         "vs_uniform": v["vs_uniform"], "callback_share": v["share"]}
                     for n, v in summary.items()}}


def section_embed(ctx: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from hf_mixture import playground
    from hf_mixture.clustering import SentenceEmbedder
    from hf_mixture.clustering.config import ClusterConfig
    from hf_mixture.clustering.embed import compute_threads

    texts = list(playground.load()["text"])
    n = ctx["sizes"]["embed_docs"] or len(texts)
    sample = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))[:n]]
    cc = ClusterConfig()  # the clustering pipeline's defaults
    out: dict[str, Any] = {"docs": n, "max_seq_length": cc.max_seq_length}
    with compute_threads():
        for tag, batch in (("default", cc.batch_size), ("batch_256", 256)):
            embedder = SentenceEmbedder(cc.embedding_model, max_seq_length=cc.max_seq_length,
                                        batch_size=batch, dtype=cc.embed_dtype)
            embedder.embed(sample[:64])  # warm-up: kernels, allocator
            if embedder.device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            start = time.perf_counter()
            emb = embedder.embed(sample)
            seconds = time.perf_counter() - start
            if emb.shape[0] != n or not np.isfinite(emb).all():
                raise RuntimeError(f"the embedder returned {emb.shape} / non-finite values")
            out[tag] = {"batch_size": batch, "docs_per_second": n / seconds, "seconds": seconds,
                        "bf16": embedder.use_bf16}
            out["device"] = embedder.device
    return out


def section_kmeans(ctx: dict[str, Any]) -> dict[str, Any]:
    import faiss
    from clustering import structured_vectors
    from sklearn.metrics import normalized_mutual_info_score

    from hf_mixture.clustering import KMeansClusterer
    from hf_mixture.clustering.embed import compute_threads

    n, dim, k, iterations = ctx["sizes"]["kmeans"]
    x = structured_vectors(n, dim, 2 * k, 0)
    out: dict[str, Any] = {"n": n, "dim": dim, "k": k, "iterations": iterations,
                           "faiss": getattr(faiss, "__version__", "?")}
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    labels = {}
    with compute_threads() as threads:
        out["cpu_threads"] = threads
        for device in ("cpu", "gpu"):
            if device == "gpu" and not gpus:
                out["gpu"] = {"skipped": "this faiss build sees no GPU (install faiss-gpu / a "
                                         "CUDA build of faiss)"}
                continue
            clusterer = KMeansClusterer(k, backend="faiss", sample=n, iterations=iterations,
                                        seed=0, gpu=device == "gpu")
            start = time.perf_counter()
            labels[device], _ = clusterer.fit(x)
            out[device] = {"seconds": time.perf_counter() - start,
                           "used_gpu": clusterer.used_gpu}
    if "gpu" in labels:
        out["speedup"] = out["cpu"]["seconds"] / out["gpu"]["seconds"]
        out["nmi_cpu_vs_gpu"] = float(normalized_mutual_info_score(labels["cpu"], labels["gpu"]))
    return out


def _launch(cmd: list[str], log: Path, timeout: float) -> float:
    """Run ``cmd`` in its own process group (killed whole on timeout); its seconds."""
    start = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(("\n$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"an accelerate launch ran past the section's time box "
                               f"({timeout:.0f} s left)") from None
    if rc != 0:
        raise RuntimeError(f"`accelerate launch` exited with status {rc}: "
                           f"{_last_line(log)}")
    return time.perf_counter() - start


def _checkpoint_losses(folder: Path) -> tuple[int, list[float]]:
    state = json.loads((folder / "trainer_state.json").read_text())
    return int(state["global_step"]), [float(e["loss"]) for e in state["log_history"]
                                       if "loss" in e]


def section_zero(ctx: dict[str, Any]) -> dict[str, Any]:
    import importlib.util

    import torch

    if importlib.util.find_spec("deepspeed") is None:
        return {"skipped": "deepspeed is not importable (pip install deepspeed)"}
    # On a GPU: one process of the GPU launcher (zero{2,3}.yaml) with --zero-recipe.  On the
    # CPU (--dry-run): the same JSONs through the two-rank CPU launchers and the tiny recipe,
    # so the section's logic has run before a GPU is lent; only its timings wait for one.
    gpu = torch.cuda.is_available()
    deadline = time.monotonic() + ctx["time_box"] - 5
    recipe = Path(ctx["zero_recipe"]) if gpu else RECIPES / "tiny_cpu.yaml"
    out: dict[str, Any] = {"recipe": str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT)
                           else recipe.name, "processes": 1 if gpu else 2}
    log = Path(ctx["output"]) / "logs" / "zero_launches.log"
    for stage in (2, 3):
        folder = Path(ctx["work"]) / f"zero{stage}"
        shutil.rmtree(folder, ignore_errors=True)
        launcher = (["--config_file", str(RECIPES / "accelerate" / f"zero{stage}.yaml"),
                     "--num_processes", "1"] if gpu else
                    ["--config_file", str(RECIPES / "accelerate" / f"cpu_zero{stage}.yaml")])
        base = [sys.executable, "-m", "accelerate.commands.launch", *launcher,
                "-m", "hf_mixture", "train", str(recipe),
                "--store", ctx["stores"]["zero"], "--eval-sequences", "0",
                "training.eval_strategy=no", "training.save_strategy=steps",
                "training.save_steps=1", "training.logging_steps=1",
                "training.disable_tqdm=true", f"training.output_dir={folder}"]
        first = _launch([*base, "training.max_steps=1"], log, deadline - time.monotonic())
        step1, losses1 = _checkpoint_losses(folder / "checkpoint-1")
        second = _launch([*base, "training.max_steps=2", "--resume"], log,
                         deadline - time.monotonic())
        step2, losses2 = _checkpoint_losses(folder / "checkpoint-2")
        ok = (step1 == 1 and step2 == 2 and len(losses2) == 2
              and all(math.isfinite(x) for x in losses1 + losses2)
              and (folder / "checkpoint-2" / "hf_mixture_sampler.json").is_file())
        if not ok:
            raise RuntimeError(f"ZeRO-{stage}: steps {step1}/{step2}, losses {losses1}/{losses2}"
                               "; expected steps 1/2, finite losses and a sampler state")
        out[f"zero{stage}"] = {"loss_step_1": losses1[0], "loss_step_2": losses2[-1],
                               "resumed": True, "first_launch_seconds": first,
                               "resume_launch_seconds": second}
        shutil.rmtree(folder, ignore_errors=True)
    return out


SECTION_FUNCTIONS = {"pretrain_1b": section_pretrain_1b, "proxy_62m": section_proxy_62m,
                     "callbacks_62m": section_callbacks_62m,
                     "embed": section_embed, "kmeans": section_kmeans, "zero": section_zero}


def environment() -> dict[str, Any]:
    """Device, driver and library versions (run in a child: the parent never touches CUDA)."""
    import importlib.metadata as md

    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    for dist in ("transformers", "accelerate", "deepspeed", "faiss-cpu", "faiss-gpu",
                 "sentence-transformers", "hf_mixture"):
        try:
            env[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                   gpu_memory_gib=props.total_memory / 2**30,
                   capability=f"{props.major}.{props.minor}",
                   bf16=torch.cuda.is_bf16_supported())
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            env["driver"] = "unknown (nvidia-smi did not answer)"
    else:
        env.update(device=f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
                   driver="n/a")
    return env


# -- the child process ---------------------------------------------------------------------------
def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def child_main(name: str, context_file: Path) -> int:
    from hf_mixture._io import atomic_write_json

    ctx = json.loads(context_file.read_text())
    ctx["time_box"] = float(os.environ.get("GPU_SUITE_TIME_BOX", "60"))
    result_file = Path(ctx["work"]) / "sections" / f"{name}.json"
    try:
        if name == "env":
            record = {"status": "ok", "results": environment()}
        else:
            results = SECTION_FUNCTIONS[name](ctx)
            record = ({"status": "skipped", "reason": results["skipped"]}
                      if set(results) == {"skipped"} else {"status": "ok", "results": results})
    except Exception as err:  # noqa: BLE001 - a failing section is recorded; the others run
        import traceback

        traceback.print_exc()
        record = {"status": "failed", "error": _first_line(err)}
    atomic_write_json(result_file, record)
    return 0


# -- the parent ----------------------------------------------------------------------------------
def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def run_child(name: str, context_file: Path, output: Path, work: Path, box: float,
              env: dict[str, str]) -> dict[str, Any]:
    """Run one section in its own process group, killed whole after ``box`` seconds."""
    log = output / "logs" / f"{name}.log"
    result_file = work / "sections" / f"{name}.json"
    result_file.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", name,
                                 "--context", str(context_file)], cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**env, "GPU_SUITE_TIME_BOX": str(box)})
        try:
            proc.wait(timeout=box)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the section and its workers/launches
            proc.wait()
            timed_out = True
    seconds = time.perf_counter() - start
    if timed_out:
        record = {"status": "failed", "error": f"timed out after {box:g} s (its time box)"}
    elif result_file.is_file():
        record = json.loads(result_file.read_text())
    else:
        record = {"status": "failed",
                  "error": f"exited with status {proc.returncode}: {_last_line(log)}"}
    record.update(seconds=round(seconds, 2), time_box_s=box, log=f"logs/{name}.log")
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="Folder for gpu_suite.json/.md and logs.")
    parser.add_argument("--dry-run", action="store_true",
                        help="The same code paths on the CPU at toy sizes (well under a minute).")
    parser.add_argument("--peak-tflops", type=float,
                        help="Dense bf16 peak of the GPU in TFLOP/s, for MFU (known: "
                             "H100, H200, A100, L40S, GH200, B200).")
    parser.add_argument("--update-docs", action="store_true",
                        help="Write the Markdown between the gpu-suite markers of "
                             "docs/benchmarks.md.")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"Comma-separated subset of {', '.join(SECTIONS)}.")
    parser.add_argument("--time-box", action="append", default=[], metavar="NAME=SECONDS",
                        help="Override one section's time box.")
    parser.add_argument("--zero-recipe", type=Path, default=RECIPES / "proxy.yaml",
                        help="Training recipe the ZeRO-2/3 launches run (default the 62M proxy).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _time_boxes(args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    boxes = {n: float(DRY_TIME_BOX if args.dry_run else TIME_BOX[n]) for n in names}
    for text in args.time_box:
        name, sep, value = text.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or name not in SECTIONS or not seconds > 0:
            raise HFMixtureError(f"--time-box {text!r} is not NAME=SECONDS with NAME one of "
                             f"{', '.join(SECTIONS)} and SECONDS > 0.")
        boxes[name] = seconds
    return boxes


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    from hf_mixture._io import atomic_write_json, atomic_write_text
    from hf_mixture.throughput import peak_flops_for_name

    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise HFMixtureError(f"--sections names {unknown[0] if unknown else 'nothing'!r}; choose "
                         f"from {', '.join(SECTIONS)}.")
    if args.output is None:
        raise HFMixtureError("--output DIR is required (where gpu_suite.json and .md go).")
    if args.update_docs and args.dry_run:
        raise HFMixtureError("--update-docs records a GPU measurement; a --dry-run's toy numbers "
                         "do not belong in docs/benchmarks.md.")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise HFMixtureError(f"--peak-tflops must be > 0, got {args.peak_tflops}.")
    if not args.zero_recipe.is_file():
        raise HFMixtureError(f"--zero-recipe '{args.zero_recipe}' is not a file.")
    boxes = _time_boxes(args, names)
    started = time.monotonic()
    output = args.output
    work = output / "work"
    for sub in ("logs", "work/sections"):
        (output / sub).mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.dry_run:
        child_env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, even on a GPU machine
    context_file = work / "context.json"
    atomic_write_json(context_file, {"work": str(work), "output": str(output)})
    probe = run_child("env", context_file, output, work, 120, child_env)
    if probe["status"] != "ok":
        raise HFMixtureError(f"The environment probe failed ({probe.get('error')}); see "
                         f"{output / probe['log']}.")
    env = probe["results"]
    if not args.dry_run and not env["cuda_available"]:
        raise HFMixtureError("No CUDA GPU is visible: run the suite on a GPU machine, or pass "
                         "--dry-run for the CPU toy run.")
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops_for_name(env["device"])
    if not args.dry_run and peak is None:
        raise HFMixtureError(f"The dense bf16 peak of '{env['device']}' is not known: pass "
                         "--peak-tflops (its data-sheet TFLOP/s, without sparsity).")
    if peak is not None:
        child_env["HF_MIXTURE_PEAK_FLOPS"] = repr(peak)  # train()'s throughput callback reads it

    size = sizes(args.dry_run)
    shape = tiny_shape_overrides() if args.dry_run else []
    dry_vocab = 1024
    zero_recipe = args.zero_recipe.resolve()
    vocabs = {"pretrain_1b": recipe_vocab(RECIPES / "pretrain_1b.yaml", shape),
              "proxy_62m": recipe_vocab(RECIPES / "proxy.yaml"),
              "zero": recipe_vocab(zero_recipe)}
    stores = {}
    for name, vocab in vocabs.items():
        vocab = dry_vocab if args.dry_run or vocab is None else vocab
        path = work / "stores" / f"vocab_{vocab}_{size['store_tokens']}"
        stores[name] = str(write_store(path, vocab, size["store_tokens"]))
    atomic_write_json(context_file, {
        "work": str(work), "output": str(output), "dry_run": args.dry_run, "sizes": size,
        "shape_overrides": shape, "stores": stores, "zero_recipe": str(zero_recipe)})

    sections: dict[str, Any] = {}
    for name in names:
        left = BUDGET_S - (time.monotonic() - started)
        if not args.dry_run and left < 15:
            sections[name] = {"status": "skipped",
                              "reason": f"the suite's {BUDGET_S} s budget was spent first"}
            continue
        box = boxes[name] if args.dry_run else min(boxes[name], left)
        print(f"[gpu_suite] {name} (time box {box:.0f} s) ...", flush=True)
        sections[name] = run_child(name, context_file, output, work, box, child_env)
        print(f"[gpu_suite] {name}: {sections[name]['status']} in "
              f"{sections[name]['seconds']:.1f} s", flush=True)
    report = {"format": FORMAT, "version": 1, "dry_run": args.dry_run,
              "date": datetime.date.today().isoformat(),
              "command": _command(args, names),
              "environment": env, "peak_tflops": peak / 1e12 if peak else None,
              "sizes": size, "wall_seconds": round(time.monotonic() - started, 1),
              "sections": sections}
    atomic_write_json(output / "gpu_suite.json", report)
    markdown = render_markdown(report)
    atomic_write_text(output / "gpu_suite.md", markdown)
    if args.update_docs:
        atomic_write_text(DOCS, replace_between_markers(DOCS.read_text(encoding="utf-8"),
                                                        markdown))
    if not args.dry_run:
        shutil.rmtree(work / "stores", ignore_errors=True)
    return report


def _command(args: argparse.Namespace, names: list[str]) -> str:
    """The command line to rerun this measurement (the output folder left as DIR)."""
    parts = ["python benchmarks/gpu_suite.py --output DIR"]
    parts += ["--dry-run"] * args.dry_run + ["--update-docs"] * args.update_docs
    if args.peak_tflops:
        parts.append(f"--peak-tflops {args.peak_tflops:g}")
    if names != list(SECTIONS):
        parts.append(f"--sections {','.join(names)}")
    parts += [f"--time-box {t}" for t in args.time_box]
    if args.zero_recipe.resolve() != (RECIPES / "proxy.yaml").resolve():
        parts.append(f"--zero-recipe {args.zero_recipe.name}")
    return " ".join(parts)


# -- the report ----------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _params(n: int) -> str:
    return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _rows(name: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    """(measurement, value) rows of one finished section."""
    if name == "pretrain_1b":
        rows = [("model", f"{_params(r['num_parameters'])} params, seq {r['seq_len']}, "
                          f"micro-batch {r['micro_batch']}, {r['dataloader_num_workers']} "
                          "loader workers")]
        every = r["runs"]["live_weights"].get("every_steps")
        for run, label in (("static", "static weights"),
                           ("live_weights", f"weights changed every {every} steps")):
            x = r["runs"][run]
            mfu = _pct(x["mfu"]) if x["mfu"] is not None else f"n/a ({x['mfu_reason']})"
            rows += [(f"{label}: tokens/s", _num(x["tokens_per_second"])),
                     (f"{label}: MFU", mfu),
                     (f"{label}: waiting for data", _pct(x["data_wait_fraction"], 2)),
                     (f"{label}: peak memory",
                      f"{x['peak_memory_gib']:.1f} GiB ({x['peak_memory_source']})")]
        rows.append(("live weights: slowdown vs static", _pct(r["live_slowdown"], 2)))
        return rows
    if name == "proxy_62m":
        return [("proxy", f"{r['model']} ({_params(r['num_parameters'])} params), "
                          f"{r['steps']} steps of {r['batch_size']} x {r['seq_len']}, "
                          f"bf16={r['bf16']}, {r['device']}"),
                ("proxy runner tokens/s", _num(r["tokens_per_second"]))]
    if name == "callbacks_62m":
        return [(f"setting (a), {r['shape']} ({_params(r['num_parameters'])} params), "
                 f"{r['steps']} steps, seeds {r['seeds']}: {run} mean held-out loss",
                 f"{x['mean_loss']:.4f} ± {x['sd']:.4f} (Δ natural "
                 f"{' '.join(f'{d:+.4f}' for d in x['vs_natural'])}; callback share "
                 f"{_pct(x['callback_share'])})") for run, x in r["runs"].items()]
    if name == "embed":
        return [(f"MiniLM docs/s, batch {r[t]['batch_size']} ({r['device']}, "
                 f"{r['max_seq_length']} tokens)", _num(r[t]["docs_per_second"], 1))
                for t in ("default", "batch_256")]
    if name == "kmeans":
        head = f"faiss k-means {r['n']:,} x {r['dim']}, k={r['k']}, {r['iterations']} iterations"
        rows = [(f"{head}: CPU ({r['cpu_threads']} threads)", f"{r['cpu']['seconds']:.3g} s")]
        if "skipped" in r["gpu"]:
            rows.append((f"{head}: GPU", f"skipped: {r['gpu']['skipped']}"))
        else:
            rows += [(f"{head}: GPU", f"{r['gpu']['seconds']:.3g} s"),
                     ("k-means GPU speedup", f"{r['speedup']:.1f}x (NMI between them "
                                             f"{r['nmi_cpu_vs_gpu']:.3f})")]
        return rows
    if name == "zero":
        return [(f"ZeRO-{s}: 1 step + save + resumed step ({r['recipe']})",
                 f"loss {r[f'zero{s}']['loss_step_1']:.3f} -> {r[f'zero{s}']['loss_step_2']:.3f}"
                 f", launches {r[f'zero{s}']['first_launch_seconds']:.0f} s + "
                 f"{r[f'zero{s}']['resume_launch_seconds']:.0f} s") for s in (2, 3)]
    return [(k, str(v)) for k, v in r.items()]


def render_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    versions = ", ".join(f"{k} {env[k]}" for k in ("transformers", "accelerate", "deepspeed",
                                                   "faiss-cpu", "faiss-gpu",
                                                   "sentence-transformers") if k in env)
    lines = [f"`{report['command'].strip()}` — {report['date']}, {env['device']}, driver "
             f"{env['driver']}, torch {env['torch']}, CUDA {env['cuda'] or 'none'}; {versions}. "
             f"Wall-clock {report['wall_seconds']:.0f} s.", ""]
    if report["dry_run"]:
        lines += ["**Dry run**: toy sizes on the CPU; this checks the code paths, it measures "
                  "nothing.", ""]
    lines += ["| section | measurement | value |", "|---|---|---|"]
    for name, sec in report["sections"].items():
        status = sec["status"]
        if status == "ok":
            for measurement, value in _rows(name, sec["results"]):
                lines.append(f"| {name} | {measurement} | {value} |")
        else:
            why = sec.get("error") if status == "failed" else sec.get("reason")
            lines.append(f"| {name} | {status} | {why} |")
    return "\n".join(lines) + "\n"


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with everything between the gpu-suite markers replaced by ``block``."""
    begin, end = MARKERS
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise HFMixtureError(f"docs/benchmarks.md must hold the marker pair {begin} ... {end} "
                         "exactly once.")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{block.rstrip()}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.context)
    try:
        report = run_suite(args)
    except HFMixtureError as err:
        print(f"gpu_suite: {err}", file=sys.stderr)
        return 2
    statuses = {n: s["status"] for n, s in report["sections"].items()}
    print(render_markdown(report))
    print(" ".join(f"{n}={s}" for n, s in statuses.items()))
    return 0 if "failed" not in statuses.values() else 1


if __name__ == "__main__":
    sys.exit(main())
