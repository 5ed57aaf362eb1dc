"""Runs recipe scenarios in every rank of one launch (``accelerate launch ... this file SPEC``).

A launch costs more than the tiny runs it carries (DeepSpeed, torch and gloo start in each
rank), so ``tests/test_deepspeed.py`` gives one launch a list of scenarios, each a real
``hf_mixture.train.train`` of ``recipes/tiny_cpu.yaml`` with overrides.  SPEC is a JSON file::

    {"recipe": ".../tiny_cpu.yaml", "results": DIR, "scenarios": [
        {"name": "ado", "overrides": ["training.max_steps=12", ...],
         "stop_at": 4,          # optional: end the run after this optimizer step
         "kill_in_save": 8,     # optional: SIGKILL rank 0 in the middle of saving checkpoint-8
         "reference_losses": {"from": "other", "path": FILE},  # optional: write a DoReMi
                                # reference-loss file from the finished scenario "other" first
         "hub": true}]}         # optional: record Hub calls (HfApi patched) per rank

Each rank writes ``DIR/<name>.rank<R>.json``: its weights history, world size, parameter
count, optimizer, push result and the Hub calls it made.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def _record_hub_calls(calls: list) -> None:
    """The Hub stand-in of tests/test_hub.py: HfApi's writes are recorded, nothing is sent."""
    from huggingface_hub import HfApi

    def create_repo(self, repo_id, **kwargs):
        calls.append({"call": "create_repo", "repo_id": repo_id})

    def create_commit(self, repo_id, operations, **kwargs):
        def text(op):
            data = op.path_or_fileobj
            data = data if isinstance(data, bytes) else Path(data).read_bytes()
            return data.decode("utf-8", "replace")

        files = {op.path_in_repo: text(op) if op.path_in_repo == "README.md" else None
                 for op in operations}
        calls.append({"call": "create_commit", "repo_id": repo_id, "files": files})
        return f"https://huggingface.co/{repo_id}/commit/0"

    HfApi.create_repo = create_repo
    HfApi.create_commit = create_commit


def _die_in_save(step: int) -> None:
    """SIGKILL rank 0 after the RNG state of checkpoint-<step> is written, before
    trainer_state.json (the completion mark): what an out-of-memory kill mid-save leaves."""
    from transformers import Trainer

    original = Trainer._save_rng_state

    def dying(self, output_dir):
        original(self, output_dir)
        if str(output_dir).rstrip("/").endswith(f"checkpoint-{step}") and \
                self.args.process_index == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_rng_state = dying


def _stopper(step: int):
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                control.should_training_stop = True
                control.should_save = True

    return lambda live: Stop()


def _write_reference_losses(scenario: dict, results: Path, recipe: str) -> None:
    from hf_mixture.callbacks import domain_eval_datasets, save_reference_losses

    from hf_mixture.formats.token_store import TokenStore
    from hf_mixture.recipe import load_train_config
    from hf_mixture.train import resolve_mixture

    cfg = load_train_config(recipe, scenario["overrides"])
    ref = scenario["reference_losses"]
    source = json.loads((results / f"{ref['from']}.rank0.json").read_text())
    store = TokenStore(cfg.data.store)
    evals = domain_eval_datasets(store, resolve_mixture(cfg, store), seq_len=cfg.data.seq_len,
                                 max_sequences=cfg.data.eval_sequences)
    save_reference_losses(ref["path"], source["metrics"], evals)


def main(spec_path: str) -> None:
    import torch

    from hf_mixture.recipe import load_train_config
    from hf_mixture.train import train

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    results = Path(spec["results"])
    results.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    for scenario in spec["scenarios"]:
        calls: list = []
        if scenario.get("hub"):
            _record_hub_calls(calls)
        if scenario.get("kill_in_save"):
            _die_in_save(int(scenario["kill_in_save"]))
        if scenario.get("reference_losses") and rank == 0:
            _write_reference_losses(scenario, results, spec["recipe"])
        cfg = load_train_config(spec["recipe"], scenario["overrides"])
        extra = [_stopper(int(scenario["stop_at"]))] if scenario.get("stop_at") else []
        if scenario.get("reference_losses"):
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()   # rank 0 has written the reference losses
        result = train(cfg, extra_callbacks=extra)
        (results / f"{scenario['name']}.rank{rank}.json").write_text(json.dumps({
            "world_size": result.world_size, "global_step": result.global_step,
            "num_parameters": result.num_parameters, "optimizer": result.optimizer,
            "history": result.weights_history, "metrics": result.metrics,
            "pushed": result.pushed, "hub_calls": calls}))
    import torch.distributed as dist

    if dist.is_initialized():   # an undestroyed gloo group can abort the process at exit
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
