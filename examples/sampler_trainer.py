"""A data mixture in a plain ``transformers.Trainer``, checkpointed and resumed exactly.

The feature: ``MixtureTrainer`` (a ``Trainer`` with ``MixtureTrainerMixin``)
trains on a ``MixtureDataset``; every checkpoint holds the sampler state
(``hf_mixture_sampler.json``, a few numbers), and ``train(resume_from_checkpoint=...)``
continues with exactly the samples an uninterrupted run would have seen — no
batches are replayed and skipped.

    python examples/sampler_trainer.py          # < 1 min on a 2-core CPU

Data → batch → loss: 400 documents per playground source become a token store
(one component per source); the mixture weights sources by their token counts
("natural"); the Trainer draws (8, 128) packed batches from it and trains a
tiny Llama for 30 steps, saving every 15.  A second run resumes from step 15:
its losses at steps 16-30 equal the first run's, and so does its final sampler state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # nothing here needs the network


def build_store(folder: Path, docs_per_source: int = 400) -> Path:
    """A token store with one component per playground source (made once)."""
    from hf_mixture import playground
    from hf_mixture.formats import TokenStoreWriter

    store = folder / "store"
    if (store / "manifest.json").is_file():
        return store
    tok = playground.tokenizer()
    data = playground.load()
    by_source: dict[str, list[str]] = {}
    for text, source in zip(data["text"], data["source"]):
        if len(by_source.setdefault(source, [])) < docs_per_source:
            by_source[source].append(text)
    with TokenStoreWriter(store, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                          tokenizer_name="playground") as writer:
        for source, texts in by_source.items():
            for ids in tok(texts, add_special_tokens=False)["input_ids"]:
                writer.add(source, "train", ids, {"source": source})
    return store


def make_trainer(store, output_dir: Path, steps: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PrinterCallback, TrainingArguments

    from hf_mixture.mixture import Mixture, MixtureDataset, MixtureTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=store.vocab_size, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=128))
    data = MixtureDataset(store, Mixture.from_store(store, "natural", seed=0), seq_len=128)
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=8,
        learning_rate=3e-3, save_strategy="steps", save_steps=steps // 2, logging_steps=1,
        report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0)  # >0 works too; on 2 cores the workers only add IPC
    trainer = MixtureTrainer(model=model, args=args, train_dataset=data)   # <- the feature
    trainer.remove_callback(PrinterCallback)    # keep the output to this script's own lines
    return trainer, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "hf_mixture_trainer_example"))
    args = parser.parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    from hf_mixture.formats import TokenStore

    torch.set_num_threads(1)    # a 0.5M-parameter model: more threads only contend
    hf_logging.set_verbosity_error()
    work = Path(args.work_dir)
    store = TokenStore(build_store(work))
    for run in ("full", "resumed"):
        shutil.rmtree(work / run, ignore_errors=True)

    full, full_data = make_trainer(store, work / "full", args.steps)
    full.train()
    half = args.steps // 2
    shutil.copytree(work / "full" / f"checkpoint-{half}", work / "resumed" / f"checkpoint-{half}")
    saved = json.loads((work / "resumed" / f"checkpoint-{half}" / "hf_mixture_sampler.json")
                       .read_text())
    print(f"checkpoint-{half} holds the sampler state: sample {saved['sample']}, "
          f"counts {saved['counts']}")

    resumed, resumed_data = make_trainer(store, work / "resumed", args.steps)
    resumed.train(resume_from_checkpoint=True)      # <- O(1): no batches replayed

    def losses(trainer):
        return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}

    a, b = losses(full), losses(resumed)
    steps = sorted(s for s in b if s > half)
    worst = max(abs(a[s] - b[s]) for s in steps)
    same_state = full_data.state_dict() == resumed_data.state_dict()
    print(f"steps {steps[0]}-{steps[-1]}: largest loss difference resumed vs uninterrupted "
          f"{worst:.2e}; final sampler states identical: {same_state}")
    return 0 if same_state and worst < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
