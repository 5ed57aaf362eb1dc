"""A plain PyTorch training loop on a live, exactly resumable data mixture.

The feature: ``MixtureDataset`` + ``MixtureDataLoader`` give packed sequences,
each drawn from one component with probability = its weight *now*; weights
change from the next batch on (``data.live.set_weights``), and
``state_dict()`` is a few numbers that resume the exact sample stream.

    python examples/sampler_plain_pytorch.py          # < 1 min on a 2-core CPU

Data → batch → loss:

1. 400 documents of each playground source are tokenized into a token store,
   one store component per source (the sources are the domains here);
2. a ``Mixture`` with a two-stage curriculum: uniform for the first half of the
   run, then mostly code and docs;
3. the loop trains a tiny Llama; every 10 steps it measures each domain's loss
   on its own batch and moves weight toward the worst domain  (# <- live weights);
4. halfway it saves the sampler state, and at the end it shows that a fresh
   dataset restored from that state yields exactly the batches the loop saw after.
"""

from __future__ import annotations

import argparse
import json
import os
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "hf_mixture_sampler_example"))
    args = parser.parse_args(argv)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_mixture.formats import TokenStore
    from hf_mixture.mixture import Component, Mixture, MixtureDataLoader, MixtureDataset, Stage

    torch.manual_seed(0)
    torch.set_num_threads(1)    # a 0.5M-parameter model: more threads only contend
    store = TokenStore(build_store(Path(args.work_dir)))
    names = store.components
    seq_len, batch_size = 128, 8
    total_tokens = args.steps * batch_size * seq_len
    code_heavy = {n: (4.0 if n.startswith("python") else 1.0) for n in names}
    mixture = Mixture([Component(n) for n in names], seed=0,
                      stages=[Stage(0, {n: 1.0 for n in names}),         # uniform first,
                              Stage(0.5, code_heavy, name="code")])       # then a curriculum
    data = MixtureDataset(store, mixture, seq_len=seq_len, total_tokens=total_tokens)
    loader = MixtureDataLoader(data, batch_size=batch_size, num_workers=0)

    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=store.vocab_size, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=seq_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    saved_state, seen_after_save = None, []
    for step, batch in enumerate(loader):
        loss = model(**batch).loss                  # input_ids, labels: (8, 128) int64
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % 10 == 0:
            # <- live weights: one batch per domain, then more weight to the worst.
            with torch.no_grad():
                losses = {n: model(**data.collate([i] * 2, [0, 1])).loss.item()
                          for i, n in enumerate(names)}
            worst = max(losses, key=losses.get)
            new = {n: w + (0.5 if n == worst else 0.0) for n, w in data.live.weights.items()}
            data.live.set_weights(new, reason=f"step {step + 1}: {worst} is the hardest")
            print(f"step {step + 1:3d} loss {loss.item():.3f} stage {data.live.stage} "
                  f"-> more {worst!r}")
        if step + 1 == args.steps // 2:
            saved_state = json.dumps(data.state_dict())   # <- O(1) exact resume point
        elif saved_state is not None:
            seen_after_save.append(batch["input_ids"])
        if step + 1 == args.steps:
            break

    print("\nweights history (sample: reason -> weights):")
    for change in data.live.history:
        w = " ".join(f"{n}={x:.2f}" for n, x in zip(names, change.weights))
        print(f"  {change.sample:5d}: {change.reason:32s} {w}")

    # A fresh dataset from the saved state yields exactly the batches the loop saw next
    # (the loop's later weight changes are made again, as a resumed run's callbacks would).
    resumed = replay(store, mixture, seq_len, total_tokens, batch_size, saved_state,
                     data.live.history)
    same = all(torch.equal(a["input_ids"], b) for a, b in zip(resumed, seen_after_save))
    print(f"\nresumed from the state saved at step {args.steps // 2}: "
          f"{'identical' if same else 'DIFFERENT'} batches for the remaining "
          f"{len(seen_after_save)} steps (state: {len(saved_state)} bytes of JSON)")
    return 0 if same else 1


def replay(store, mixture, seq_len, total_tokens, batch_size, state, history):
    """Batches after the saved point, re-applying the loop's later weight changes."""
    from hf_mixture.mixture import MixtureDataLoader, MixtureDataset

    data = MixtureDataset(store, mixture, seq_len=seq_len, total_tokens=total_tokens)
    data.load_state_dict(json.loads(state))
    changes = {c.sample: c for c in history if c.reason.startswith("step ")}
    for batch in MixtureDataLoader(data, batch_size=batch_size):
        yield batch
        change = changes.get(data.state_dict()["sample"])   # made after this batch
        if change is not None:
            data.live.set_weights(change.weights, reason=change.reason)


if __name__ == "__main__":
    raise SystemExit(main())
