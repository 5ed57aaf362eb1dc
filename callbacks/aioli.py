"""Aioli (Chen et al., ICLR 2025): learn the mixing law's interactions online, step on them.

The linear dynamic mixing law behind Aioli: over a round ``t`` of training on
the mixture ``p``, the eval loss of group ``i`` drops by ``sum_j A^t_ij p_j``.
Aioli estimates ``A^t`` at the start of every round by intervening on the
mixture, then takes an exponentiated-gradient step on it (Algorithms 1 and 2
of the paper)::

    for t = 1..T:                                     # rounds of R optimizer steps
        LearnParams (Algorithm 2), the first k*m*lp steps of the round:
            L <- eval losses
            for each of k sweeps, for each group j in a fresh random order:
                train lp steps on q_j = f * e_j + (1 - f)/(m - 1) * (1 - e_j)
                beta[:, j] += L - (eval losses);  L <- eval losses
            beta /= k
            A^t = beta Q^{-1}                         # Q: the rows q_j (beta = A Q)
        normalize A^t: subtract min(A^t, 0), divide by the sum of the rows c reads
        p^t_j ∝ p^{t-1}_j exp(eta * sum_i c_i A^t_ij)    # c: the target's rows
        train on p^t for the rest of the round

``c`` is 1 on every group for the target ``"mean"`` (the paper's objective,
average loss), 1 on the group with the largest loss at the start of the round
for ``"worst"``, and 1 on the target's own row for a text or callable target:
its loss is measured beside the groups', so ``A`` gains a row for it and the
step follows what each group's data does to the target.  The "restricted"
setting of the paper (adapt a mixture learned elsewhere over the whole run) is
the default: ``p^0`` is the mixture the run starts from.  With ``ema > 0`` the
step is the authors' released variant: ``Abar = (1 - ema) A^t + ema Abar`` and
``p^t ∝ p^0 exp(eta * sum_i c_i Abar_ij)`` (anchored at ``p^0``, not compounded).

The hyperparameters are the paper's, scaled to the run: ``rounds`` rounds over
the steps from ``start_step`` to ``max_steps``, and ``lp_fraction`` of each round
in LearnParams (``lp_steps`` per intervention, at least 1; when ``k * m``
interventions do not fit in that fraction the rounds are made longer and fewer).
Every boundary of an intervention ends with an evaluation that the callback asks
the Trainer for (``control.should_evaluate``); the losses come back through
``on_evaluate`` like any other, gathered over ranks, so every rank computes the
same ``A``.  The schedule is a pure function of the optimizer step and the state
(``beta``, the last losses, the round's order, ``p``) is in the checkpoint.

>>> schedule = aioli_schedule(max_steps=1000, start=1, rounds=4, groups=2, sweeps=2,
...                           lp_fraction=0.128, lp_steps=0)
>>> schedule.round_steps, schedule.lp_steps, schedule.rounds
(250, 8, 4)
>>> schedule.boundary(1), schedule.boundary(9), schedule.boundary(20), schedule.boundary(251)
((0, 0), (0, 1), None, (1, 0))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hf_mixture._checks import check_float, check_int
from hf_mixture.errors import HFMixtureError

from .base import AdaptiveConfig, MixtureCallback, register_callback, timed


# -- the math (pure functions) -------------------------------------------------------------------
def sweep_mixture(group: int, num_groups: int, one_hot_factor: float) -> np.ndarray:
    """The smoothed one-hot mixture of a LearnParams intervention on ``group``.

    >>> sweep_mixture(0, 3, 0.75).tolist()
    [0.75, 0.125, 0.125]
    """
    m = int(num_groups)
    q = np.full(m, (1.0 - one_hot_factor) / (m - 1))
    q[int(group)] = one_hot_factor
    return q


def interaction_matrix(beta: np.ndarray, one_hot_factor: float) -> np.ndarray:
    """``A`` from the averaged loss drops ``beta`` (rows: eval sets, columns: groups).

    ``beta[i, j]`` is the drop of eval loss ``i`` over an intervention on group
    ``j``; the law says ``beta = A Q`` with ``Q`` the matrix of the intervention
    mixtures (symmetric), so ``A = beta Q^{-1}``.  With ``one_hot_factor = 1``
    ``Q`` is the identity.

    >>> a = np.array([[2.0, 0.0], [0.5, 1.0]])
    >>> q = np.stack([sweep_mixture(j, 2, 0.75) for j in range(2)])
    >>> interaction_matrix(a @ q, 0.75).round(6).tolist()
    [[2.0, 0.0], [0.5, 1.0]]
    """
    beta = np.asarray(beta, dtype=np.float64)
    m = beta.shape[1]
    if one_hot_factor == 1.0:
        return beta.copy()
    q = np.stack([sweep_mixture(j, m, one_hot_factor) for j in range(m)])
    return np.linalg.solve(q.T, beta.T).T


def normalize_interactions(a: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``A`` shifted so its smallest entry is at least 0, divided by the sum of the rows the
    step reads (``rows``: the target's weights per row; ``None``: every row, the paper's
    normalization).  0 stays 0.

    With the mean target (every row) the column gains ``rows @ A`` then sum to 1, as in the
    paper; dividing by the rows read keeps that for a target of one row (``"worst"``, a text
    or callable target), so ``eta`` means the same step size for every target.

    >>> normalize_interactions(np.array([[1.0, -1.0], [0.0, 2.0]])).tolist()
    [[0.3333333333333333, 0.0], [0.16666666666666666, 0.5]]
    >>> normalize_interactions(np.array([[1.0, -1.0], [0.0, 2.0]]), np.array([0.0, 1.0])).tolist()
    [[0.5, 0.0], [0.25, 0.75]]
    """
    a = np.asarray(a, dtype=np.float64)
    low = min(float(a.min()), 0.0)
    shifted = a - low
    if rows is None:
        total = float(shifted.sum())
    else:
        total = float(np.asarray(rows, dtype=np.float64) @ shifted.sum(axis=1))
    return shifted / total if total > 0 else np.zeros_like(a)


def aioli_step(weights: np.ndarray, a: np.ndarray, rows: np.ndarray, *, eta: float) -> np.ndarray:
    """``p_j ∝ p_j exp(eta * sum_i rows_i a_ij)``, normalized (computed in log space).

    >>> aioli_step(np.array([0.5, 0.5]), np.array([[0.5, 0.0], [0.25, 0.25]]),
    ...            np.ones(2), eta=1.0).round(4).tolist()
    [0.6225, 0.3775]
    """
    w = np.asarray(weights, dtype=np.float64)
    gain = np.asarray(rows, dtype=np.float64) @ np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(w / w.sum()) + float(eta) * gain
    logits -= logits[np.isfinite(logits)].max()
    out = np.exp(logits)
    return out / out.sum()


@dataclass(frozen=True)
class AioliSchedule:
    """Where the rounds and the LearnParams interventions fall, in optimizer steps.

    Round ``t`` starts after step ``start + t * round_steps``; its LearnParams
    occupies the next ``sweeps * groups * lp_steps`` steps, an evaluation closing
    each intervention (``boundary`` gives ``(round, index)``: index 0 is the
    evaluation before the first intervention, ``sweeps * groups`` the last).
    """

    start: int
    round_steps: int
    lp_steps: int
    rounds: int
    groups: int
    sweeps: int

    @property
    def interventions(self) -> int:
        return self.sweeps * self.groups

    def boundary(self, step: int) -> tuple[int, int] | None:
        """``(round, index)`` when an evaluation closes at ``step``, else ``None``."""
        step = int(step)
        if step < self.start:
            return None
        t, pos = divmod(step - self.start, self.round_steps)
        if t >= self.rounds or pos % self.lp_steps or pos // self.lp_steps > self.interventions:
            return None
        return t, pos // self.lp_steps

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def aioli_schedule(*, max_steps: int, start: int, rounds: int, groups: int, sweeps: int,
                   lp_fraction: float, lp_steps: int) -> AioliSchedule:
    """The paper's round structure scaled to ``max_steps`` (see the module doc)."""
    dynamic = int(max_steps) - int(start)
    n = sweeps * groups
    round_steps = dynamic // max(int(rounds), 1)
    if lp_steps <= 0:
        lp_steps = max(1, round(lp_fraction * round_steps / n))
    # Too short a round for k*m interventions in its lp_fraction: longer, fewer rounds.
    round_steps = max(round_steps, math.ceil(n * lp_steps / lp_fraction), n * lp_steps + 1)
    count = 0 if dynamic < n * lp_steps else 1 + (dynamic - n * lp_steps) // round_steps
    if count < 1:
        raise HFMixtureError(
            f"AioliCallback needs at least {n * lp_steps} optimizer steps after step {start} "
            f"for one LearnParams ({sweeps} sweeps x {groups} groups x {lp_steps} steps), but "
            f"the run has {max(dynamic, 0)}; lower sweeps or lp_steps, or train longer.")
    return AioliSchedule(int(start), int(round_steps), int(lp_steps), int(min(count, rounds)),
                         int(groups), int(sweeps))


# -- config --------------------------------------------------------------------------------------
@dataclass
class AioliConfig(AdaptiveConfig):
    """Configuration of :class:`AioliCallback` (every field is also a CLI flag).

    The defaults are the paper's released settings (SlimPajama, 160M parameters),
    expressed as fractions of the run so they scale to its length.
    """

    rounds: int = field(default=20, metadata={
        "help": "T: rounds over the run, each a LearnParams then training on the new mixture "
                "(the paper's 2- and 3-group runs: 5,000 steps in rounds of 250 = 20)."})
    sweeps: int = field(default=4, metadata={
        "help": "k: sweeps through the groups in each LearnParams (the paper: 4 with 2 groups, "
                "2 with 7)."})
    lp_fraction: float = field(default=0.128, metadata={
        "help": "delta: fraction of each round spent in LearnParams (the paper's 2-group run: "
                "2 groups x 4 sweeps x 4 steps of a 250-step round = 0.128)."})
    lp_steps: int = field(default=0, metadata={
        "help": "Optimizer steps per intervention; 0 = from lp_fraction (at least 1)."})
    one_hot_factor: float = field(default=0.75, metadata={
        "help": "Weight of the group intervened on; the others share the rest (the paper: "
                "0.625-0.75). Must be > 1/m so the interventions can be solved for A."})
    eta: float = field(default=0.2, metadata={
        "help": "Step size of the exponentiated-gradient update on the normalized A (the "
                "paper's 2-group runs: 0.2; its 7-group runs pair eta 1 with ema)."})
    ema: float = field(default=0.0, metadata={
        "help": "0: Algorithm 1 (p^t from p^{t-1}). > 0: the authors' released variant, an "
                "EMA of A (weight of the old estimate) and p^t from p^0 (the released runs: "
                "0.1)."})
    normalize: bool = field(default=True, metadata={
        "help": "Normalize A before the step (shift its minimum to 0, divide by the sum of "
                "the rows the target reads: all of them for 'mean', as the paper's runs do)."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the order of the groups in each sweep (the same on every rank)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.rounds, "Config field 'rounds'", 1)
        check_int(self.sweeps, "Config field 'sweeps'", 1)
        check_int(self.lp_steps, "Config field 'lp_steps'", 0)
        check_int(self.seed, "Config field 'seed'", 0)
        self.lp_fraction = check_float(self.lp_fraction, "Config field 'lp_fraction'", 0.0, 1.0,
                                       low_open=True, high_open=True)
        self.one_hot_factor = check_float(self.one_hot_factor, "Config field 'one_hot_factor'",
                                          0.0, 1.0, low_open=True)
        self.eta = check_float(self.eta, "Config field 'eta'", 0.0, 1e6, low_open=True)
        self.ema = check_float(self.ema, "Config field 'ema'", 0.0, 1.0, high_open=True)


# -- the callback --------------------------------------------------------------------------------
@register_callback
class AioliCallback(MixtureCallback):
    """Aioli: LearnParams interventions estimate ``A^t``; an EG step on it sets each round's mixture.

    Args:
        live: the run's MixtureDataset (a text target is tokenized with its store's
            tokenizer), MixtureDataLoader or LiveMixture.
        config: an :class:`AioliConfig`, a mapping, or keyword overrides —
            ``AioliCallback(data, target="data/my_target.jsonl")``.

    >>> from hf_mixture.mixture import LiveMixture
    >>> cb = AioliCallback(LiveMixture(["a", "b"], [0.5, 0.5], seq_len=8), rounds=1, sweeps=1,
    ...                    lp_steps=1, one_hot_factor=1.0, eta=1.0)
    >>> cb.plan(max_steps=10)
    AioliSchedule(start=1, round_steps=16, lp_steps=1, rounds=1, groups=2, sweeps=1)
    >>> order = cb.order(0)
    >>> for step, losses in [(1, (3.0, 3.0)), (2, (2.0, 2.9)), (3, (1.9, 2.0))]:
    ...     _ = cb.observe(dict(zip("ab", losses)), step=step)
    >>> cb.weights["a"] != 0.5
    True
    """

    config_class = AioliConfig
    name = "aioli"
    supported_targets = ("mean", "worst", "text", "callable")

    def __init__(self, live: Any, config: AioliConfig | Mapping[str, Any] | None = None,
                 **overrides: Any):
        super().__init__(live, config, **overrides)
        m = len(self.domains)
        if m < 2:
            raise HFMixtureError("AioliCallback needs at least 2 groups (mixture components).")
        if self.config.one_hot_factor <= 1.0 / m:
            raise HFMixtureError(f"AioliConfig field 'one_hot_factor' is "
                                 f"{self.config.one_hot_factor}; with {m} groups it must be > "
                                 f"{1 / m:.4g} (else the interventions cannot be told apart).")
        self.prior = self.live.weights_array            # p^0: the mixture the run starts from
        self.policy = self.prior.copy()                 # p^t: trained on outside LearnParams
        self.schedule: AioliSchedule | None = None
        self.beta: np.ndarray | None = None             # summed loss drops of this LearnParams
        self.previous: list[float] | None = None        # eval losses at the last boundary
        self.expect: tuple[int, int] | None = None      # the next boundary of this round
        self.ema_matrix: np.ndarray | None = None
        self.matrices: list[dict[str, Any]] = []         # {"step", "A"} of every round

    # -- the schedule ------------------------------------------------------------------------
    def plan(self, max_steps: int) -> AioliSchedule:
        """Fix the rounds for a run of ``max_steps`` optimizer steps (on_train_begin does it)."""
        schedule = aioli_schedule(
            max_steps=int(max_steps), start=max(self.config.start_step, 1),
            rounds=self.config.rounds, groups=len(self.domains), sweeps=self.config.sweeps,
            lp_fraction=self.config.lp_fraction, lp_steps=self.config.lp_steps)
        if self.schedule is not None and self.schedule != schedule:
            raise HFMixtureError(f"AioliCallback resumes a run planned as {self.schedule}, but "
                                 f"this run plans {schedule} (max_steps changed?); resume with "
                                 "the same max_steps.")
        self.schedule = schedule
        return schedule

    def order(self, round_index: int) -> list[int]:
        """The groups in intervention order for round ``round_index``: one permutation per sweep."""
        rng = np.random.default_rng([int(self.config.seed), int(round_index)])
        m = len(self.domains)
        return [int(j) for _ in range(self.config.sweeps) for j in rng.permutation(m)]

    @property
    def in_learn_params(self) -> bool:
        return self.expect is not None

    def _rows(self, losses: np.ndarray) -> np.ndarray:
        """``c``: which rows of ``A`` the step sums (the target's)."""
        m = len(self.domains)
        extra = 1 if self.target_kind in ("text", "callable") else 0
        c = np.zeros(m + extra)
        if self.target_kind == "mean":
            c[:m] = 1.0
        elif self.target_kind == "worst":
            c[int(np.argmax(losses[:m]))] = 1.0
        else:
            c[m] = 1.0
        return c

    def _vector(self, losses: np.ndarray) -> np.ndarray:
        """The eval losses of this boundary: the groups', then the target's when it has a row."""
        losses = np.asarray(losses, dtype=np.float64)
        if self.target_kind in ("text", "callable"):
            if self.last_target is None or not math.isfinite(self.last_target):
                return np.append(losses, np.nan)
            return np.append(losses, self.last_target)
        return losses

    # -- the rule ----------------------------------------------------------------------------
    def compute_weights(self, losses, *, step, samples):
        if self.schedule is None:
            self.plan(max_steps=max(int(step), 1) + 10 ** 9)  # observe() without a Trainer
        at = self.schedule.boundary(step)
        if at is None:
            return
        t, i = at
        vector = self._vector(losses)
        if not np.all(np.isfinite(vector)):
            self._abandon(step, f"the target's loss at step {step} is not finite")
            return
        n = self.schedule.interventions
        if i == 0:
            m = len(self.domains)
            self.beta = np.zeros((len(vector), m))
            self.previous = vector.tolist()
        elif self.expect != (t, i):
            self._abandon(step, f"the evaluation before step {step} is missing")
            return
        else:
            j = self.order(t)[i - 1]
            self.beta[:, j] += np.asarray(self.previous) - vector
            self.previous = vector.tolist()
        if i < n:
            j = self.order(t)[i]
            self.expect = (t, i + 1)
            self.apply(sweep_mixture(j, len(self.domains), self.config.one_hot_factor),
                       step=step, reason=f"step {step}: LearnParams round {t}, "
                                         f"{self.domains[j]!r}")
            return
        self._finish(step, t)
        return

    def _finish(self, step: int, t: int) -> None:
        a = interaction_matrix(self.beta / self.config.sweeps, self.config.one_hot_factor)
        rows = self._rows(np.asarray(self.previous))
        if self.config.normalize:
            a = normalize_interactions(a, rows)
        self.matrices.append({"step": int(step), "A": a.tolist()})
        if self.config.ema > 0:
            g = self.config.ema
            self.ema_matrix = a if self.ema_matrix is None else (1 - g) * a + g * self.ema_matrix
            new = aioli_step(self.prior, self.ema_matrix, rows, eta=self.config.eta)
        else:
            new = aioli_step(self.policy, a, rows, eta=self.config.eta)
        self.expect, self.beta, self.previous = None, None, None
        self.policy = self.apply(new, step=step, reason=f"step {step}: round {t}")

    def _abandon(self, step: int, why: str) -> None:
        """A LearnParams that lost an evaluation: back to ``p``, wait for the next round."""
        if self.expect is None:
            return
        from .base import logger

        logger.warning("AioliCallback: %s; this round's LearnParams is dropped and the mixture "
                       "stays at the last one.", why)
        self.expect, self.beta, self.previous = None, None, None
        self.apply(self.policy, step=step, reason=f"step {step}: LearnParams dropped")

    # -- Trainer hooks ---------------------------------------------------------------------------
    @timed
    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.plan(max_steps=int(state.max_steps or args.max_steps))
        if self.target_kind == "text" and not self._attached:
            self._warn(state, "AioliCallback was passed in callbacks=[...]: its target's eval "
                       "set is added by callback.attach(trainer) only.")

    @timed
    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        if self._training and self.schedule is not None \
                and self.schedule.boundary(state.global_step) is not None:
            control.should_evaluate = True    # the same step on every rank: a pure schedule
        return control

    # -- state -----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "prior": self.prior.tolist(), "policy": self.policy.tolist(),
            "schedule": None if self.schedule is None else self.schedule.to_dict(),
            "beta": None if self.beta is None else self.beta.tolist(),
            "previous": self.previous, "expect": None if self.expect is None else list(self.expect),
            "ema_matrix": None if self.ema_matrix is None else self.ema_matrix.tolist(),
            "matrices": self.matrices, "last_target": self.last_target,
        }

    def _load_state(self, state: Mapping[str, Any], where: str) -> None:
        K = len(self.domains)
        try:
            prior = np.asarray([float(x) for x in state["prior"]], dtype=np.float64)
            policy = np.asarray([float(x) for x in state["policy"]], dtype=np.float64)
            schedule = None if state["schedule"] is None else AioliSchedule(**{
                k: int(v) for k, v in state["schedule"].items()})
            beta = None if state["beta"] is None else np.asarray(state["beta"], dtype=np.float64)
            previous = None if state["previous"] is None else [float(x) for x in state["previous"]]
            expect = None if state["expect"] is None else tuple(int(x) for x in state["expect"])
            ema = None if state["ema_matrix"] is None else np.asarray(state["ema_matrix"],
                                                                      dtype=np.float64)
            matrices = [{"step": int(e["step"]), "A": [[float(x) for x in r] for r in e["A"]]}
                        for e in state["matrices"]]
            last = state.get("last_target")
            last = None if last is None else float(last)
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where}: field 'rule' is malformed ({type(err).__name__}: "
                                 f"{err}).") from None
        if len(prior) != K or len(policy) != K or (beta is not None and beta.shape[1] != K):
            raise HFMixtureError(f"{where}: field 'rule' holds vectors of another length than "
                                 f"the {K} domains.")
        self.prior, self.policy, self.schedule = prior, policy, schedule
        self.beta, self.previous, self.expect = beta, previous, expect
        self.ema_matrix, self.matrices, self.last_target = ema, matrices, last
