"""The search's settings: one dataclass whose fields are both ``--flags`` and ``search.yaml`` keys.

The defaults are the CPU-sized search (3 rounds of 8/4/2 proxies of a ≈1M-parameter
Llama on 150k tokens each, then 2 verification runs of the final candidates: the same
16 proxies as the 8/4/4 search without verification, which took 11.7 minutes on a
shared, loaded 2-core machine).  :meth:`SearchConfig.gpu`
is CLIMB's setting (64/32/16 proxies of the 62m shape, trained as ``recipes/proxy.yaml``
says).  The ``proxy_*`` defaults are :class:`~hf_mixture.search.proxy.ProxySettings`'.

>>> SearchConfig().rounds
[8, 4, 2]
>>> SearchConfig.gpu().rounds
[64, 32, 16]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import HFMixtureError
from ..models import SHAPES
from .proxy import PROXY_RECIPE, ProxySettings

# The one place the proxy defaults are written: ProxySettings (proxy_<name> = its <name>).
_PROXY = ProxySettings()

FINAL_CHOICES = ("top_k_average", "predicted_best", "best_run")
PRIORS = ("natural", "uniform")

# Fields that may change between a search and its resumption without changing what was
# planned: how runs are executed, and how the final mixture is read off the predictor.
RESUMABLE_CHANGES = frozenset({
    "proxy_threads", "proxy_device", "retry_failed", "final",
    "final_top_k", "cv_folds", "rounds", "verify_seeds", "transfer_check", "transfer_model",
    "transfer_runs"})


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SearchConfig:
    """Settings of a CLIMB mixture search (``hf-mixture search``; YAML keys = field names)."""

    # the loop
    # 8/4/2, not 8/4/4: the verification trains the predicted best and the top-k average
    # (2 runs) after the last round, so the main job still trains 16 proxies in all.  The cost:
    # the last round samples 2 instead of 4 mixtures from the predicted top.
    rounds: list[int] = field(default_factory=lambda: [8, 4, 2], metadata=_h(
        "Proxy runs per round: round 1 is random, later rounds come from the predicted top."))
    candidates: int = field(default=100_000, metadata=_h(
        "Candidate mixtures scored by the predictor in each later round and for the final pick."))
    top_fraction: float = field(default=0.005, metadata=_h(
        "A later round draws its runs at random from this top fraction of the scored candidates."))
    prior: str = field(default="natural", metadata=_h(
        "Dirichlet prior mean: 'natural' (token shares of the pool) or 'uniform'."))
    prior_temperature: float = field(default=1.0, metadata=_h(
        "Temperature on the natural token shares (p ~ tokens^(1/T)); large T is near uniform."))
    dirichlet_concentration: float = field(default=1.0, metadata=_h(
        "Dirichlet concentration (alpha = c * D * prior): < 1 sparse mixtures, > 1 near the prior."))
    max_epochs: float | None = field(default=4.0, metadata=_h(
        "Repetition cap: no component may be repeated more than this many times in a run of "
        "run_tokens tokens (null: no cap)."))
    run_tokens: int | None = field(default=None, metadata=_h(
        "Length in tokens of the run the mixture is for (caps use it); default: proxy_tokens."))
    # auto on CPU: 16 runs are too few for trees (playground benchmark: LightGBM's held-out
    # Spearman 0.79, linear 0.94 on the same runs); CLIMB's 112 GPU runs use LightGBM.
    predictor: str = field(default="auto", metadata=_h(
        "Predictor of the target from the weights: hybrid, mixing_law, lightgbm, linear, "
        "loglinear, or 'auto' (chosen again each round by held-out Spearman on the runs so far; "
        "the law-based hybrid/mixing_law unless another beats them by more than auto_margin)."))
    auto_margin: float = field(default=0.05, metadata=_h(
        "'auto' takes a predictor outside the law family only when its held-out Spearman beats "
        "the best law-based one by more than this: same-scale fit is not what transfers."))
    verify_seeds: int = field(default=1, metadata=_h(
        "After the last round, train the final candidates (predicted best, top-k average, best "
        "run) with this many seeds each and return the best observed; 0: return the `final` "
        "candidate untrained (a prediction)."))
    final: str = field(default="top_k_average", metadata=_h(
        "With verify_seeds 0, the mixture returned: 'top_k_average' (RegMix: mean of the "
        "predicted top-k candidates), 'predicted_best' (CLIMB) or 'best_run' (best finished "
        "proxy)."))
    final_top_k: int = field(default=100, metadata=_h(
        "k of top_k_average."))
    cv_folds: int = field(default=5, metadata=_h(
        "Folds of the predictors' cross-validation (leave-one-out below 12 runs)."))
    seed: int = field(default=0, metadata=_h(
        "Seed of candidates, proxy initialization and data order (all proxies share it: common "
        "random numbers make their differences the mixtures' doing)."))
    # transfer across scale
    transfer_check: bool = field(default=False, metadata=_h(
        "Also train transfer_model on transfer_runs round-1 mixtures and report how well each "
        "predictor, fitted on the small proxies, ranks those larger runs (Spearman)."))
    transfer_model: str = field(default="cpu-5m", metadata=_h(
        "The larger proxy of the transfer check (a preset or a config file/folder)."))
    transfer_runs: int = field(default=6, metadata=_h(
        "Round-1 mixtures (the first ones) trained again with transfer_model."))
    # the pool
    pool: str | None = field(default=None, metadata=_h(
        "Mixture file whose components (store components or queries) are the pool; default: every "
        "store component."))
    exclude: list[str] = field(default_factory=list, metadata=_h(
        "Pool components to leave out."))
    # the target
    target_text_column: str = field(default="text", metadata=_h(
        "Text column of a target text set."))
    target_split: str = field(default="train", metadata=_h(
        "Split of a target dataset."))
    target_max_tokens: int = field(default=16384, metadata=_h(
        "Tokens of target text the loss is measured on."))
    target_greater_is_better: bool = field(default=False, metadata=_h(
        "For a callable target: higher values are better."))
    tokenizer: str | None = field(default=None, metadata=_h(
        "Tokenizer for target text; default: the one named in the token store's manifest."))
    # the proxies
    proxy_model: str = field(default=_PROXY.model, metadata=_h(
        f"Proxy model: a registered shape ({', '.join(SHAPES)}; hf_mixture.models) or a config "
        "file/folder."))
    proxy_init_from: str | None = field(default=_PROXY.init_from, metadata=_h(
        "Continue every proxy from this model folder instead of training from scratch."))
    proxy_tokens: int = field(default=_PROXY.tokens, metadata=_h(
        "Training tokens per proxy run."))
    proxy_seq_len: int = field(default=_PROXY.seq_len, metadata=_h(
        "Tokens per training sequence."))
    proxy_batch_size: int = field(default=_PROXY.batch_size, metadata=_h(
        "Sequences per forward pass."))
    proxy_gradient_accumulation_steps: int = field(
        default=_PROXY.gradient_accumulation_steps, metadata=_h(
            "Forward passes per optimizer step (sequences per step = proxy_batch_size x this)."))
    proxy_learning_rate: float = field(default=_PROXY.learning_rate, metadata=_h(
        "Peak learning rate (cosine)."))
    proxy_warmup_fraction: float = field(default=_PROXY.warmup_fraction, metadata=_h(
        "Warm-up fraction of steps."))
    proxy_weight_decay: float = field(default=_PROXY.weight_decay, metadata=_h(
        "AdamW weight decay."))
    proxy_eval_points: int = field(default=_PROXY.eval_points, metadata=_h(
        "Steps at which domain and target losses are recorded (>= 3 for fit-laws)."))
    proxy_eval_tokens: int = field(default=_PROXY.eval_tokens, metadata=_h(
        "Validation tokens per domain at each eval point."))
    proxy_threads: int = field(default=_PROXY.threads, metadata=_h(
        "torch threads per proxy process (1 per core with workers = cores is fastest for tiny "
        "models)."))
    proxy_device: str = field(default=_PROXY.device, metadata=_h(
        "'auto', 'cpu', 'cuda' or 'cuda:N'."))
    proxy_bf16: bool = field(default=_PROXY.bf16, metadata=_h(
        "Train proxies in bf16 mixed precision."))
    # execution: where the proxies run is the ExecutorConfig's (--executor, --workers, --slurm-*)
    retry_failed: bool = field(default=False, metadata=_h(
        "Run failed proxy runs again on resume."))

    def __post_init__(self) -> None:
        if not self.rounds or any(isinstance(r, bool) or int(r) < 1 for r in self.rounds):
            raise HFMixtureError(f"Field 'rounds' must be a non-empty list of positive run counts, "
                                 f"got {self.rounds!r}.")
        self.rounds = [int(r) for r in self.rounds]
        # Every number must be finite before anything is recorded: a search folder records its
        # settings, and an inf or NaN there would make it refuse the corrected value later.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise HFMixtureError(f"Field {f.name!r} must be a finite number, got {value!r}.")
        checks = [("proxy_weight_decay", self.proxy_weight_decay >= 0), ("candidates", self.candidates >= 1), ("final_top_k", self.final_top_k >= 1),
                  ("cv_folds", self.cv_folds >= 2), ("top_fraction", 0 < self.top_fraction <= 1),
                  ("prior_temperature", self.prior_temperature > 0),
                  ("dirichlet_concentration", self.dirichlet_concentration > 0),
                  ("proxy_tokens", self.proxy_tokens >= 1), ("proxy_seq_len", self.proxy_seq_len >= 2),
                  ("proxy_batch_size", self.proxy_batch_size >= 1),
                  ("proxy_gradient_accumulation_steps",
                   self.proxy_gradient_accumulation_steps >= 1),
                  ("proxy_learning_rate", self.proxy_learning_rate > 0),
                  ("proxy_eval_points", self.proxy_eval_points >= 1),
                  ("proxy_eval_tokens", self.proxy_eval_tokens >= 2),
                  ("target_max_tokens", self.target_max_tokens >= 2),
                  ("proxy_threads", self.proxy_threads >= 0),
                  ("max_epochs", self.max_epochs is None or self.max_epochs > 0),
                  ("run_tokens", self.run_tokens is None or self.run_tokens >= 1),
                  ("seed", self.seed >= 0), ("verify_seeds", self.verify_seeds >= 0),
                  ("transfer_runs", self.transfer_runs >= 3),
                  ("auto_margin", self.auto_margin >= 0)]
        for name, ok in checks:
            if not ok:
                raise HFMixtureError(f"Field {name!r} has the invalid value "
                                     f"{getattr(self, name)!r}.")
        for name, value, allowed in (("final", self.final, FINAL_CHOICES),
                                     ("prior", self.prior, PRIORS)):
            if value not in allowed:
                raise HFMixtureError(f"Field {name!r} is {value!r}; choose one of "
                                     f"{', '.join(allowed)}.")

    @classmethod
    def gpu(cls, recipe: str | os.PathLike = PROXY_RECIPE, **overrides: Any) -> SearchConfig:
        """CLIMB's scale: 64/32/16 proxies, one worker per GPU, each trained as ``recipe`` says.

        The proxy's shape, sequence length, batch, length, learning rate, warm-up, weight
        decay and precision come from the training recipe (``recipes/proxy.yaml``: the
        62m shape), so a proxy of the search and ``hf-mixture train recipes/proxy.yaml``
        are the same model trained the same way; the rest is the search's.
        """
        proxy = ProxySettings.recipe_fields(recipe)
        base = {"rounds": [64, 32, 16], **{f"proxy_{k}": v for k, v in proxy.items()},
                "proxy_eval_points": 8, "proxy_eval_tokens": 65536, "target_max_tokens": 1_000_000,
                "proxy_device": "cuda", "predictor": "lightgbm"}
        base.update(overrides)
        return cls(**base)

    def default_workers(self) -> int:
        """Proxy runs at once on this machine when ``--workers`` is not given (local
        executor): one per GPU, else one per ``proxy_threads`` cores.

        Tiny proxies use one thread poorly and two badly (the threads contend), so on
        CPU one single-threaded process per core is the fastest use of the machine.
        """
        if self.proxy_device != "cpu":
            import torch

            if torch.cuda.is_available():
                return max(1, torch.cuda.device_count())
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // max(1, self.proxy_threads))

    def proxy_settings(self) -> ProxySettings:
        return ProxySettings(
            model=self.proxy_model, init_from=self.proxy_init_from, tokens=self.proxy_tokens,
            seq_len=self.proxy_seq_len, batch_size=self.proxy_batch_size,
            gradient_accumulation_steps=self.proxy_gradient_accumulation_steps,
            learning_rate=self.proxy_learning_rate, warmup_fraction=self.proxy_warmup_fraction,
            weight_decay=self.proxy_weight_decay, eval_points=self.proxy_eval_points,
            eval_tokens=self.proxy_eval_tokens, threads=self.proxy_threads,
            device=self.proxy_device, bf16=self.proxy_bf16)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
