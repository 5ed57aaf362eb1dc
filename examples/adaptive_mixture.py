"""Adaptive data mixing with ADO on the playground: a tiny Llama learns, the mixture follows.

The feature: ``ADOCallback`` fits a power law to each domain's held-out loss and
moves the sampling weights toward the domains the model is learning fastest,
live, inside a plain ``transformers.Trainer`` (MixtureTrainer only adds the
sampler's checkpointing).

    python examples/adaptive_mixture.py                 # ~3-5 min on a 2-core CPU
    python examples/adaptive_mixture.py --steps 60      # a quick look

Data → batch → loss in one sitting:

1. the bundled playground (7 sources) becomes a clustered corpus with one
   cluster per source (fine for an example: the sources are the domains), then a
   token store with a held-out validation slice per domain;
2. a ``Mixture`` names one component per source (a query on ``cluster_id``) with
   natural (token-proportional) weights; ``MixtureDataset`` draws packed
   128-token sequences, each from one component with probability = its live weight;
3. ``domain_eval_datasets`` makes a fixed eval set per domain, so every
   evaluation reports ``eval_<domain>_loss``;
4. ``ADOCallback`` reads those losses and calls ``LiveMixture.set_weights``;
5. ``plot_mixture`` draws the weights and the per-domain losses.

Everything is offline: the model is built from a config (no download).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # nothing here needs the network


def build_store(work: Path) -> Path:
    """Playground → clustered corpus (cluster = source) → token store; reused when present."""
    from hf_mixture import playground
    from hf_mixture.formats import tokenize_corpus, write_clustered_corpus

    store = work / "store"
    if (store / "manifest.json").is_file():
        return store
    data = playground.load()
    sources = list(playground.SOURCES)
    data = data.map(lambda row: {"cluster_id": sources.index(row["source"])})
    corpus = work / "corpus"
    if not (corpus / "clusters.json").is_file():
        write_clustered_corpus(data, corpus, tokenizer=playground.tokenizer(),
                               descriptions={i: {"description": s}
                                             for i, s in enumerate(sources)})
    # 2% of each domain is held out: the per-domain eval sets come from it.
    tokenize_corpus(corpus, store, playground.tokenizer_dir(), validation_fraction=0.02, seed=0)
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--eval-steps", type=int, default=20,
                        help="evaluate every this many steps (ADO updates at each evaluation)")
    parser.add_argument("--work-dir", default="runs/adaptive_mixture",
                        help="folder for the store, checkpoints and the picture (under runs/, "
                             "which git ignores)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest for this tiny model on a busy "
                             "machine)")
    args = parser.parse_args(argv)

    import torch
    from hf_mixture.callbacks import ADOCallback, domain_eval_datasets
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from hf_mixture import playground
    from hf_mixture.formats import TokenStore
    from hf_mixture.mixture import Component, Mixture, MixtureDataset, MixtureTrainer
    from hf_mixture.plotting import plot_mixture

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    store = TokenStore(build_store(work))
    seq_len = 128          # short sequences: the playground's documents average ~220 tokens

    # One component per source, selected by metadata, weighted by its tokens ("natural").
    sources = list(playground.SOURCES)
    mixture = Mixture([Component(s, f"cluster_id == {k}",
                                 weight=store.num_tokens(f"cluster_{k}", "train"))
                       for k, s in enumerate(sources)], seed=0)
    data = MixtureDataset(store, mixture, seq_len=seq_len)
    evals = domain_eval_datasets(store, mixture, seq_len=seq_len, max_sequences=16)

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(   # ~1.2M parameters, most of them the 8192-token embeddings
        vocab_size=store.vocab_size, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=seq_len,
        eos_token_id=store.eos_token_id, bos_token_id=None, pad_token_id=None))
    training = TrainingArguments(
        output_dir=str(work / "run"), max_steps=args.steps, per_device_train_batch_size=16,
        per_device_eval_batch_size=16, learning_rate=3e-3, warmup_steps=10,
        lr_scheduler_type="cosine", eval_strategy="steps", eval_steps=args.eval_steps,
        logging_steps=args.eval_steps, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, disable_tqdm=False)
    trainer = MixtureTrainer(model=model, args=training, train_dataset=data,
                             eval_dataset=evals)
    # + the feature: weights follow each domain's fitted learning speed
    ado = ADOCallback(data.live, min_points=3, fit_from_step=args.eval_steps)
    ado.attach(trainer)

    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start

    print(f"\ntrained {args.steps} steps in {seconds:.0f} s; ADO spent {ado.seconds:.2f} s "
          f"({100 * ado.seconds / seconds:.2f}%) in its hooks")
    print(f"{'domain':<12} {'start':>7} {'final':>7} {'eval loss':>10}")
    last = {d: e[f"eval_{d}_loss"] for e in trainer.state.log_history for d in data.live.names
            if f"eval_{d}_loss" in e}
    first = data.live.history[0].weights
    for d, w0, w in zip(data.live.names, first, data.live.weights_array):
        print(f"{d:<12} {w0:7.3f} {w:7.3f} {last.get(d, float('nan')):10.3f}")
    picture = plot_mixture(trainer.state.log_history, work / "adaptive_mixture.png",
                           live=data.live, samples_per_step=training.per_device_train_batch_size
                           * training.world_size,
                           title=f"ADO on the playground ({args.steps} steps)")
    print(f"picture: {picture.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
