"""The declarative mixture: which documents to train on, in what proportion, in what order.

A :class:`Mixture` names its components (each a metadata query over a token
store, or simply a store component), gives them weights, optionally a
temperature, per-component repetition caps, and a curriculum of
:class:`Stage` s whose weights replace the components' weights from a point of
the run on.  It is plain data: YAML/JSON round-trip, validated on construction
and on load, and fingerprinted so that a sampler's saved state can refuse a
different mixture.

>>> m = Mixture([Component("code", "source == 'code'", weight=3),
...              Component("prose", "source != 'code'", weight=1)])
>>> m.weights()
{'code': 0.75, 'prose': 0.25}
>>> Mixture.from_yaml(m.to_yaml()) == m
True

A mixture file (YAML shown; JSON holds the same keys)::

    name: code-heavy
    seed: 0
    temperature: 1.0
    components:
      - {name: code, query: "source == 'code'", weight: 3, max_epochs: 4}
      - {name: prose, query: {cluster_id: [0, 1, 2]}, weight: 1}
    stages:
      - {start: 0, weights: {code: 1, prose: 1}}
      - {start: 0.8, weights: {code: 3, prose: 1}, name: anneal}
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import as_number, check_int, check_tokens
from .._io import atomic_write_text, short_hash
from ..errors import HFMixtureError
from .query import QuerySource, describe, parse_query, select

if TYPE_CHECKING:  # pragma: no cover
    from ..formats.token_store import TokenStore
    from .plan import MixturePlan

_MIXTURE_KEYS = ("name", "description", "seed", "temperature", "components", "stages")
_COMPONENT_KEYS = ("name", "query", "weight", "max_epochs", "description")
_STAGE_KEYS = ("start", "weights", "name")
# TRL's `datasets:` entries (trl.DatasetConfig) and open-r1's variant (id/config/weight).
_TRL_KEYS = ("path", "id", "name", "config", "split", "proportion", "weight",
             "columns", "data_dir", "data_files")


# -- value checks shared by the dataclasses ----------------------------------------------
def _number(value: Any, what: str) -> float:
    """``value`` as a float, or one sentence naming ``what``.

    Strings that spell a number are accepted because YAML 1.1 (PyYAML) reads
    ``1e-3`` — no dot — as the string '1e-3'.
    """
    number = as_number(value)
    if number is None:
        raise HFMixtureError(f"{what} must be a number, got {value!r}.")
    return number


def _weight(value: Any, what: str) -> float:
    w = _number(value, what)
    if not math.isfinite(w) or w < 0:
        raise HFMixtureError(f"{what} is {value!r}; weights must be finite and >= 0.")
    return w


def _check_not_all_zero(weights: Mapping[str, float], what: str) -> None:
    if weights and not any(w > 0 for w in weights.values()):
        raise HFMixtureError(f"{what} are all zero; at least one must be positive.")


def normalize_weights(weights: Mapping[str, float], temperature: float = 1.0) -> dict[str, float]:
    """Weights scaled to sum to 1 after the temperature: ``w_i ∝ w_i ** (1 / T)``.

    ``T > 1`` flattens the mixture towards uniform, ``T < 1`` sharpens it;
    zero weights stay zero.  Computed in log space so that tiny temperatures
    neither overflow nor underflow to all-zero.

    >>> normalize_weights({"a": 1, "b": 3})
    {'a': 0.25, 'b': 0.75}
    >>> normalize_weights({"a": 1, "b": 4}, temperature=2.0)
    {'a': 0.3333333333333333, 'b': 0.6666666666666666}
    """
    names = list(weights)
    w = np.array([float(weights[n]) for n in names], dtype=np.float64)
    if not len(w) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise HFMixtureError(
            f"Weights {dict(weights)!r} must be finite, >= 0 and not all zero."
        )
    if not (math.isfinite(temperature) and temperature > 0):
        raise HFMixtureError(f"temperature must be a finite number > 0, got {temperature!r}.")
    return {n: float(x) for n, x in zip(names, tempered(w, temperature))}


def tempered(w: np.ndarray, temperature: float) -> np.ndarray:
    """``w ** (1 / T)`` normalized, in log space (no overflow or all-zero underflow at tiny
    ``T``); zeros stay zero.  ``w`` finite, ``>= 0``, not all zero; ``T > 0``.

    >>> tempered(np.array([1.0, 4.0]), 2.0).tolist()
    [0.3333333333333333, 0.6666666666666666]
    """
    positive = w > 0
    logits = np.full(len(w), -np.inf)
    logits[positive] = np.log(w[positive]) / temperature
    logits[positive] -= logits[positive].max()
    p = np.where(positive, np.exp(logits), 0.0)
    return p / p.sum()


def _check_keys(data: Any, allowed: Iterable[str], what: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise HFMixtureError(f"{what} must be a mapping, got {type(data).__name__} {data!r}.")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise HFMixtureError(
            f"{what} has the unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)}; allowed keys are {', '.join(allowed)}."
        )
    return dict(data)


# -- the dataclasses ---------------------------------------------------------------------
@dataclass
class Component:
    """One named part of a mixture.

    ``query`` selects documents by metadata (an expression string or a
    field -> value dict, see :mod:`hf_mixture.mixture.query`); the empty query
    means "the store component named ``name``".  ``max_epochs`` caps how many
    times the component's tokens may be repeated (``None``: no cap).  ``description``
    is what a reader sees beside the name (a cluster's top terms); it does not change
    sampling.

    >>> Component("code", "source == 'code'", weight=2.0, max_epochs=4)
    Component(name='code', query="source == 'code'", weight=2.0, max_epochs=4.0)
    """

    name: str
    query: QuerySource = ""
    weight: float = 1.0
    max_epochs: float | None = None
    description: str | None = field(default=None, repr=False, compare=True)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise HFMixtureError(f"A component's field 'name' must be a non-empty string, got "
                                 f"{self.name!r}.")
        if self.name != self.name.strip():
            raise HFMixtureError(f"Component name {self.name!r} has leading or trailing spaces.")
        where = f"component {self.name!r}"
        if self.query is None:
            self.query = ""
        if isinstance(self.query, Mapping):
            self.query = dict(self.query)
        elif isinstance(self.query, str):
            self.query = self.query if self.query.strip() else ""
        else:
            raise HFMixtureError(f"{where}: field 'query' must be a string or a mapping, got "
                                 f"{self.query!r}.")
        if self.query:
            try:  # parsed now so that a bad query fails on load, not mid-training
                parse_query(self.query)
            except HFMixtureError as err:
                raise HFMixtureError(f"{where}: field 'query': {err}") from None
        self.weight = _weight(self.weight, f"{where}: field 'weight'")
        if self.max_epochs is not None:
            cap = _number(self.max_epochs, f"{where}: field 'max_epochs'")
            if not math.isfinite(cap) or cap <= 0:
                raise HFMixtureError(f"{where}: field 'max_epochs' is {self.max_epochs!r}; it "
                                     "must be a finite number > 0 (or null for no cap).")
            self.max_epochs = cap
        if self.description is not None:
            if not isinstance(self.description, str):
                raise HFMixtureError(f"{where}: field 'description' must be a string, got "
                                     f"{self.description!r}.")
            self.description = self.description.strip() or None

    @property
    def label(self) -> str:
        """``name — description`` for people (``cluster_3 — wordnet, noun, verb``), else the name."""
        return f"{self.name} — {self.description}" if self.description else self.name

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.query:
            out["query"] = self.query
        out["weight"] = self.weight
        if self.max_epochs is not None:
            out["max_epochs"] = self.max_epochs
        if self.description is not None:
            out["description"] = self.description
        return out


@dataclass
class Stage:
    """A curriculum stage: from ``start`` on, ``weights`` replace the components' weights.

    ``start < 1`` is a fraction of the run, ``start >= 1`` a token count (an
    integer).  Weights are by component name and must name every component.

    >>> Stage(0.8, {"code": 3, "prose": 1}, name="anneal").is_fraction
    True
    """

    start: float
    weights: dict[str, float]
    name: str | None = None

    def __post_init__(self) -> None:
        where = f"stage {self.name!r}" if self.name is not None else "a stage"
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise HFMixtureError(f"A stage's field 'name' must be a non-empty string or null, "
                                 f"got {self.name!r}.")
        start = _number(self.start, f"{where}: field 'start'")
        if not math.isfinite(start) or start < 0:
            raise HFMixtureError(f"{where}: field 'start' is {self.start!r}; it must be a "
                                 "fraction in [0, 1) or a token count >= 1.")
        if start >= 1:
            if start != int(start):
                raise HFMixtureError(f"{where}: field 'start' is {self.start!r}; a start >= 1 "
                                     "is a token count and must be a whole number.")
            self.start = int(start)
        else:
            self.start = float(start)
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise HFMixtureError(f"{where}: field 'weights' must be a non-empty mapping of "
                                 f"component name to weight, got {self.weights!r}.")
        self.weights = {str(k): _weight(v, f"{where}: field 'weights.{k}'")
                        for k, v in self.weights.items()}
        _check_not_all_zero(self.weights, f"{where}: field 'weights'")

    @property
    def is_fraction(self) -> bool:
        """Whether ``start`` is a fraction of the run (a token count otherwise; 0 is both)."""
        return isinstance(self.start, float)

    def start_tokens(self, total_tokens: int | None) -> int:
        """The token at which the stage begins; fractions round to the nearest token."""
        if not self.is_fraction:
            return int(self.start)
        if self.start == 0:
            return 0
        if total_tokens is None:
            label = f"Stage {self.name!r}" if self.name else "A stage"
            raise HFMixtureError(f"{label} starts at the fraction {self.start} of the run; "
                                 "pass total_tokens to place it.")
        return round(self.start * total_tokens)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": self.start, "weights": dict(self.weights)}
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True, eq=False)
class ResolvedComponent:
    """A component's documents in one split of a token store.

    ``parts`` pairs each store component with the ascending int64 indices of
    the matching documents in it.
    """

    name: str
    parts: tuple[tuple[str, np.ndarray], ...]
    num_docs: int
    num_tokens: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResolvedComponent):
            return NotImplemented
        return (self.name == other.name and self.num_docs == other.num_docs
                and self.num_tokens == other.num_tokens and len(self.parts) == len(other.parts)
                and all(a == c and np.array_equal(b, d)
                        for (a, b), (c, d) in zip(self.parts, other.parts)))

    __hash__ = None  # type: ignore[assignment]  # holds arrays


@dataclass
class Mixture:
    """A declarative pre-training data mixture; see the module docstring for the file format.

    >>> m = Mixture([Component("a", weight=1), Component("b", weight=3)],
    ...             stages=[Stage(0, {"a": 1, "b": 1}), Stage(0.5, {"a": 0, "b": 1})])
    >>> m.weights_at(600, total_tokens=1000)
    {'a': 0.0, 'b': 1.0}
    """

    components: list[Component]
    stages: list[Stage] = field(default_factory=list)
    temperature: float = 1.0
    seed: int = 0
    name: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.components, (list, tuple)) or not self.components:
            raise HFMixtureError("A mixture's field 'components' must be a non-empty list.")
        self.components = [c if isinstance(c, Component) else _component_from(c, i)
                           for i, c in enumerate(self.components)]
        seen: set[str] = set()
        for c in self.components:
            if c.name in seen:
                raise HFMixtureError(f"Component name {c.name!r} appears more than once in "
                                     "field 'components'.")
            seen.add(c.name)
        _check_not_all_zero({c.name: c.weight for c in self.components},
                            "The components' weights (field 'components[*].weight')")
        temperature = _number(self.temperature, "Field 'temperature'")
        if not math.isfinite(temperature) or temperature <= 0:
            raise HFMixtureError(f"Field 'temperature' is {self.temperature!r}; it must be a "
                                 "finite number > 0.")
        self.temperature = temperature
        self.seed = check_int(self.seed, "Field 'seed'", 0)
        for key in ("name", "description"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise HFMixtureError(f"Field {key!r} must be a string, got {value!r}.")
        if not isinstance(self.stages, (list, tuple)):
            raise HFMixtureError(f"Field 'stages' must be a list, got {self.stages!r}.")
        self.stages = [s if isinstance(s, Stage) else _stage_from(s, i)
                       for i, s in enumerate(self.stages)]
        self._check_stages()

    def _check_stages(self) -> None:
        if not self.stages:
            return
        names = self.component_names
        stage_names: set[str] = set()
        for i, stage in enumerate(self.stages):
            label = _stage_label(stage, i)
            unknown = [k for k in stage.weights if k not in names]
            if unknown:
                raise HFMixtureError(
                    f"{label}: field 'weights' names the unknown component {unknown[0]!r}; the "
                    f"components are {', '.join(names)}."
                )
            missing = [n for n in names if n not in stage.weights]
            if missing:
                raise HFMixtureError(
                    f"{label}: field 'weights' lacks the component "
                    f"{', '.join(repr(m) for m in missing)}; give every component a weight "
                    "(0 to leave it out)."
                )
            if stage.name is not None:
                if stage.name in stage_names:
                    raise HFMixtureError(f"Stage name {stage.name!r} appears more than once.")
                stage_names.add(stage.name)
        if self.stages[0].start != 0:
            raise HFMixtureError(
                f"{_stage_label(self.stages[0], 0)}: field 'start' is {self.stages[0].start!r}; "
                "the first stage must start at 0."
            )
        # Stages given in the same unit can be ordered now; a fraction against a token
        # count only once the run's length is known (stage_boundaries).
        for i in range(1, len(self.stages)):
            for j in range(i):
                a, b = self.stages[j], self.stages[i]
                same_unit = a.start == 0 or b.start == 0 or a.is_fraction == b.is_fraction
                if same_unit and not b.start > a.start:
                    raise HFMixtureError(
                        f"{_stage_label(b, i)}: field 'start' is {b.start!r}, not after "
                        f"{_stage_label(a, j)} at {a.start!r}; stages must be listed in "
                        "increasing order of start."
                    )

    # -- weights -------------------------------------------------------------------------
    @property
    def component_names(self) -> list[str]:
        return [c.name for c in self.components]

    def weights(self) -> dict[str, float]:
        """The components' weights, temperature applied, normalized to sum to 1."""
        return normalize_weights({c.name: c.weight for c in self.components}, self.temperature)

    def stage_boundaries(self, total_tokens: int | None) -> list[int]:
        """The token at which each stage starts (fractions of ``total_tokens``, rounded).

        >>> Mixture([Component("a")], stages=[Stage(0, {"a": 1}), Stage(0.25, {"a": 1})]
        ...         ).stage_boundaries(1000)
        [0, 250]
        """
        if total_tokens is not None:
            total_tokens = check_tokens(total_tokens, "total_tokens")
        starts = [s.start_tokens(total_tokens) for s in self.stages]
        for i in range(1, len(starts)):
            if starts[i] <= starts[i - 1]:
                raise HFMixtureError(
                    f"{_stage_label(self.stages[i], i)} starts at token {starts[i]}, not after "
                    f"{_stage_label(self.stages[i - 1], i - 1)} at token "
                    f"{starts[i - 1]} of a {total_tokens}-token run; stages must be in "
                    "increasing order of start."
                )
        return starts

    def stage_at(self, tokens_seen: int, total_tokens: int | None) -> int:
        """Index of the stage in force after ``tokens_seen`` tokens (0 without stages)."""
        tokens_seen = check_tokens(tokens_seen, "tokens_seen", allow_zero=True)
        if not self.stages:
            return 0
        starts = self.stage_boundaries(total_tokens)
        # The last stage whose start has been reached.
        return int(np.searchsorted(np.asarray(starts), tokens_seen, side="right") - 1)

    def weights_at(self, tokens_seen: int, total_tokens: int | None) -> dict[str, float]:
        """The normalized weights in force after ``tokens_seen`` tokens of the run."""
        if not self.stages:
            check_tokens(tokens_seen, "tokens_seen", allow_zero=True)
            return self.weights()
        stage = self.stages[self.stage_at(tokens_seen, total_tokens)]
        return self.stage_weights(stage)

    def stage_weights(self, stage: Stage | int) -> dict[str, float]:
        """A stage's weights in component order, temperature applied, normalized."""
        if isinstance(stage, int):
            stage = self.stages[stage]
        return normalize_weights({n: stage.weights[n] for n in self.component_names},
                                 self.temperature)

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.description is not None:
            out["description"] = self.description
        out["seed"] = self.seed
        out["temperature"] = self.temperature
        out["components"] = [c.to_dict() for c in self.components]
        if self.stages:
            out["stages"] = [s.to_dict() for s in self.stages]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Mixture:
        """Build from a plain dict; ``source`` (a file name) prefixes every error.

        A TRL-style ``datasets:`` list is accepted in place of ``components:``.
        """
        try:
            if isinstance(data, Mapping) and "datasets" in data and "components" not in data:
                data = dict(data)
                entries = data.pop("datasets")
                rest = _check_keys(data, _MIXTURE_KEYS, "The mixture")
                return cls.from_trl_datasets(entries, **rest)
            data = _check_keys(data, _MIXTURE_KEYS, "The mixture")
            if "components" not in data:
                raise HFMixtureError("The mixture has no field 'components' (nor a TRL-style "
                                     "'datasets' list).")
            components = data.pop("components")
            if not isinstance(components, list) or not components:
                raise HFMixtureError(f"Field 'components' must be a non-empty list, got "
                                     f"{components!r}.")
            stages = data.pop("stages", None) or []
            if not isinstance(stages, list):
                raise HFMixtureError(f"Field 'stages' must be a list, got {stages!r}.")
            return cls(components=[_component_from(c, i) for i, c in enumerate(components)],
                       stages=[_stage_from(s, i) for i, s in enumerate(stages)], **data)
        except HFMixtureError as err:
            if source is None:
                raise
            raise HFMixtureError(f"{source}: {err}") from None

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path_or_str: str | os.PathLike) -> Mixture:
        """Load from a JSON file path or a JSON string."""
        text, source = _read(path_or_str, looks_inline=lambda s: s.lstrip().startswith("{"))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise HFMixtureError(f"{source or 'The mixture JSON'} is not valid JSON "
                                 f"({err.msg} at line {err.lineno}).") from None
        return cls.from_dict(data, source=source)

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        import yaml

        text = yaml.dump(self.to_dict(), Dumper=_dumper(), sort_keys=False, allow_unicode=True)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_yaml(cls, path_or_str: str | os.PathLike) -> Mixture:
        """Load from a YAML file path or a YAML string (``yaml.safe_load`` semantics; a key
        written twice in one mapping is an error, not last-wins)."""
        import yaml

        from .._yaml import load_yaml

        text, source = _read(path_or_str, looks_inline=lambda s: "\n" in s or ":" in s)
        try:
            data = load_yaml(text, source or "The mixture YAML")
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            raise HFMixtureError(f"{source or 'The mixture YAML'} is not valid YAML{at} "
                                 f"({problem}).") from None
        if data is None:
            raise HFMixtureError(f"{source or 'The mixture YAML'} is empty.")
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        path = Path(path)
        kind = _kind(path)
        (self.to_yaml if kind == "yaml" else self.to_json)(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Mixture:
        """Read a ``.yaml``/``.yml`` or ``.json`` mixture file."""
        path = Path(path)
        kind = _kind(path)
        if not path.is_file():
            raise HFMixtureError(f"Mixture file '{path}' does not exist.")
        return cls.from_yaml(path) if kind == "yaml" else cls.from_json(path)

    @property
    def fingerprint(self) -> str:
        """16 hex digits of the sha256 of the canonical JSON of what decides sampling.

        ``name`` and ``description`` are left out: retitling a mixture must not
        invalidate a sampler state saved under it.
        """
        data = self.to_dict()
        data.pop("name", None)
        data.pop("description", None)
        data.setdefault("stages", [])
        for c in data["components"]:
            c.setdefault("query", "")
            c.setdefault("max_epochs", None)
            c.pop("description", None)  # a label, like the mixture's own description
        for s in data["stages"]:
            s.pop("name", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return short_hash(blob)

    # -- other shapes ----------------------------------------------------------------------
    @classmethod
    def from_trl_datasets(cls, entries: Iterable[Mapping[str, Any]], **kwargs: Any
                          ) -> Mixture:
        """Components from TRL's ``datasets:`` list (``path``/``id``, ``name``/``config``,
        ``split``, ``proportion``/``weight``; ``columns``/``data_dir``/``data_files`` say how
        to read text and play no part once it is tokenized).

        Each entry becomes the store component named after the dataset (the last part
        of its path, then ``-<config>`` when one is given); a missing weight is 1.

        >>> Mixture.from_trl_datasets([{"path": "org/fineweb", "proportion": 0.7},
        ...                            {"path": "org/stack", "name": "python", "weight": 0.3}]
        ...                           ).component_names
        ['fineweb', 'stack-python']
        """
        if not isinstance(entries, (list, tuple)) or not entries:
            raise HFMixtureError(f"Field 'datasets' must be a non-empty list, got {entries!r}.")
        components = []
        for i, entry in enumerate(entries):
            where = f"datasets[{i}]"
            entry = _check_keys(entry, _TRL_KEYS, where)
            path = _exactly_one(entry, ("path", "id"), where)
            config = _at_most_one(entry, ("name", "config"), where)
            weight = _at_most_one(entry, ("proportion", "weight"), where)
            split = entry.get("split", "train")
            if split != "train":
                raise HFMixtureError(
                    f"{where}: field 'split' is {split!r}; a mixture trains on the token "
                    "store's 'train' split, so tokenize that split into the store instead."
                )
            if not isinstance(path, str) or not path.strip("/"):
                raise HFMixtureError(f"{where}: field 'path' must be a dataset id or folder, "
                                     f"got {path!r}.")
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if config is not None:
                name = f"{name}-{config}"
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
            components.append(Component(name, weight=1.0 if weight is None else
                                        _weight(weight, f"{where}: field 'weight'")))
        return cls(components=components, **kwargs)

    @classmethod
    def from_store(cls, store: TokenStore, weights: str | Mapping[str, float] = "natural",
                   **kwargs: Any) -> Mixture:
        """One component per store component.

        ``weights``: ``"natural"`` (proportional to training tokens), ``"uniform"``, or a
        dict naming every store component.  Other keyword arguments go to :class:`Mixture`.

        >>> Mixture.from_store(TokenStore("store"), "uniform", seed=1)   # doctest: +SKIP
        """
        names = store.components
        if isinstance(weights, str):
            if weights == "natural":
                given = {n: float(store.num_tokens(n, "train")) for n in names}
            elif weights == "uniform":
                given = {n: 1.0 for n in names}
            else:
                raise HFMixtureError(f"weights must be 'natural', 'uniform' or a dict of "
                                     f"component to weight, got {weights!r}.")
        elif isinstance(weights, Mapping):
            unknown = [k for k in weights if k not in names]
            if unknown:
                raise HFMixtureError(f"weights name {unknown[0]!r}, which token store "
                                     f"'{store.path}' lacks; it has {', '.join(names)}.")
            missing = [n for n in names if n not in weights]
            if missing:
                raise HFMixtureError(f"weights lack the store component {missing[0]!r}; give "
                                     "every component a weight (0 to leave it out).")
            given = dict(weights)
        else:
            raise HFMixtureError(f"weights must be 'natural', 'uniform' or a dict, got "
                                 f"{weights!r}.")
        return cls(components=[Component(n, weight=given[n]) for n in names], **kwargs)

    # -- against a store ------------------------------------------------------------------
    def resolve(self, store: TokenStore, split: str = "train", *,
                allow_empty: bool = False) -> list[ResolvedComponent]:
        """Each component's documents in ``split`` of ``store``, in component order.

        A component that matches nothing is an error unless ``allow_empty`` (useful for
        a validation split that lacks some components).
        """
        resolved = []
        for c in self.components:
            if c.query:
                parts = select(store, c.query, split)
            else:
                if c.name not in store.components:
                    raise HFMixtureError(
                        f"Component {c.name!r} has no query and token store '{store.path}' "
                        f"has no component of that name; it has {', '.join(store.components)} "
                        "(give the component a query to select documents by metadata)."
                    )
                n = store.num_docs(c.name, split)
                parts = {c.name: np.arange(n, dtype=np.int64)} if n else {}
            num_docs = int(sum(len(idx) for idx in parts.values()))
            if not num_docs and not allow_empty:
                what = f"query {describe(c.query)}" if c.query else "its store component"
                raise HFMixtureError(
                    f"Component {c.name!r} matches no document of the {split!r} split of token "
                    f"store '{store.path}' ({what})."
                )
            num_tokens = 0
            for part, idx in parts.items():
                idx.flags.writeable = False  # shared with samplers: nobody may reorder it
                off = store.offsets(part, split)
                num_tokens += int((off[idx + 1] - off[idx]).sum())
            resolved.append(ResolvedComponent(
                c.name, tuple((k, v) for k, v in parts.items()), num_docs, num_tokens))
        return resolved

    def plan(self, total_tokens: int, store: TokenStore) -> MixturePlan:
        """The MPT-style table of what a ``total_tokens`` run draws from ``store``."""
        from .plan import build_plan

        return build_plan(self, total_tokens, store)

    # -- the Hub: provided by hf_mixture.hub, which sits above this module -------------------
    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Publish as a dataset repo with ``mixture.yaml`` and a card.

        The same as :func:`hf_mixture.hub.push_mixture_to_hub` ``(self, repo_id, **kwargs)``,
        found through the package's ``hf_mixture.mixture_hub`` entry points (see
        :func:`hub_function`): this module never imports the Hub layer.

        >>> mix.push_to_hub("me/my-mixture")                     # doctest: +SKIP
        """
        return hub_function("push_to_hub")(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, repo_id_or_path: str, **kwargs: Any) -> Mixture:
        """Load a published mixture from a Hub repo id or a local folder/file.

        The same as :func:`hf_mixture.hub.load_mixture`, found like :meth:`push_to_hub`'s.
        """
        return hub_function("from_pretrained")(repo_id_or_path, **kwargs)


HUB_ENTRY_POINTS = "hf_mixture.mixture_hub"


def hub_function(name: str) -> Any:
    """The function a higher layer registered as entry point ``name`` of ``hf_mixture.mixture_hub``.

    ``pyproject.toml`` registers ``push_to_hub = hf_mixture.hub:push_mixture_to_hub`` and
    ``from_pretrained = hf_mixture.hub:load_mixture``: the dependency points from the Hub
    layer down to the mixture, as the layers require (``tests/test_layers.py``).
    """
    from importlib.metadata import entry_points

    found = {ep.value: ep for ep in entry_points(group=HUB_ENTRY_POINTS) if ep.name == name}
    if not found:
        raise HFMixtureError(
            f"Mixture.{name} needs the entry point {name!r} of group {HUB_ENTRY_POINTS!r}, which "
            "this installation's metadata lacks: reinstall hf_mixture (`pip install -e .` in a "
            "checkout) or call hf_mixture.hub directly.")
    if len(found) > 1:
        raise HFMixtureError(f"Entry point {name!r} of group {HUB_ENTRY_POINTS!r} is registered "
                             f"more than once ({', '.join(sorted(found))}); uninstall all but one.")
    return next(iter(found.values())).load()


# -- helpers -----------------------------------------------------------------------------
def _component_from(data: Any, index: int) -> Component:
    if isinstance(data, Component):
        return data
    where = f"components[{index}]"
    data = _check_keys(data, _COMPONENT_KEYS, where)
    if "name" not in data:
        raise HFMixtureError(f"{where} has no field 'name'.")
    return Component(**data)


def _stage_from(data: Any, index: int) -> Stage:
    if isinstance(data, Stage):
        return data
    where = f"stages[{index}]"
    data = _check_keys(data, _STAGE_KEYS, where)
    for key in ("start", "weights"):
        if key not in data:
            raise HFMixtureError(f"{where} has no field {key!r}.")
    return Stage(**data)


def _stage_label(stage: Stage, index: int) -> str:
    return f"stages[{index}] ({stage.name!r})" if stage.name else f"stages[{index}]"


def _exactly_one(entry: Mapping[str, Any], keys: tuple[str, str], where: str) -> Any:
    present = [k for k in keys if k in entry]
    if len(present) != 1:
        raise HFMixtureError(f"{where} must have exactly one of the fields "
                             f"{' / '.join(keys)}, got {', '.join(present) or 'neither'}.")
    return entry[present[0]]


def _at_most_one(entry: Mapping[str, Any], keys: tuple[str, str], where: str) -> Any:
    present = [k for k in keys if k in entry]
    if len(present) > 1:
        raise HFMixtureError(f"{where} has both fields {keys[0]!r} and {keys[1]!r}; give one.")
    return entry[present[0]] if present else None


def _dumper():
    """A SafeDumper that double-quotes strings holding Unicode line breaks.

    With ``allow_unicode`` PyYAML writes NEL / LINE SEPARATOR / PARAGRAPH SEPARATOR
    inside plain scalars, and reading them back folds them into spaces: quoting
    (which escapes them) keeps the round-trip exact.
    """
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def represent_str(dumper, value: str):
        style = '"' if any(ch in value for ch in "\x85\u2028\u2029") else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, represent_str)
    return _Dumper


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise HFMixtureError(f"Mixture file '{path}' must end in .yaml, .yml or .json, not "
                         f"{suffix or '(no suffix)'!r}.")


def _read(path_or_str: str | os.PathLike, looks_inline) -> tuple[str, str | None]:
    """(text, file name or None): a path is read, an inline document is used as is."""
    if isinstance(path_or_str, os.PathLike):
        path = Path(path_or_str)
    elif isinstance(path_or_str, str):
        if looks_inline(path_or_str):
            return path_or_str, None
        path = Path(path_or_str)
    else:
        raise HFMixtureError(f"Expected a mixture file path or document text, got "
                             f"{type(path_or_str).__name__}.")
    if not path.is_file():
        raise HFMixtureError(f"Mixture file '{path}' does not exist.")
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except UnicodeDecodeError:
        raise HFMixtureError(f"Mixture file '{path}' is not UTF-8 text.") from None
