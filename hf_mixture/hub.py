"""Publishing mixtures and models on the Hugging Face Hub, with cards.

A mixture repo (a Hub *dataset* repo) holds::

    mixture.yaml            the mixture (what Mixture.load / load_mixture read)
    README.md               the dataset card: weights, stages, the MPT-style plan table,
                            seed, source corpus + revision, library versions, how to use it
    report/...              the search report and its pictures, when given
    data/train-*.parquet    optional: sequences drawn from the mixture (README configs make
                            `load_dataset(repo)` read them)

Every push is staged into a folder first (:func:`stage_mixture_repo`, also the
``local_dir`` "dry run"), then sent as ONE commit (``HfApi.create_commit`` with a
``CommitOperationAdd`` per file) from the main process only.  The token is handed
to ``HfApi`` and never printed or logged.

>>> from hf_mixture.mixture import Mixture, Component
>>> m = Mixture([Component("code", weight=3), Component("prose", weight=1)], name="demo")
>>> push_mixture_to_hub(m, "me/demo-mixture", local_dir="out/demo")   # doctest: +SKIP
>>> load_mixture("out/demo").weights()                                # doctest: +SKIP
{'code': 0.75, 'prose': 0.25}

``Mixture.push_to_hub`` and ``Mixture.from_pretrained`` are these two functions:
this module registers them as the ``hf_mixture.mixture_hub`` entry points
(``pyproject.toml``), so the mixture layer below never imports the Hub layer.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._io import atomic_path
from ._markdown import cell as _cell
from .errors import HFMixtureError
from .formats.hubstyle import files_fingerprint, stamp_configs
from .models import format_parameters

if TYPE_CHECKING:  # pragma: no cover
    from .mixture import Mixture

logger = logging.getLogger(__name__)

MIXTURE_FILE = "mixture.yaml"
MIXTURE_FILES = ("mixture.yaml", "mixture.yml", "mixture.json")
MIXTURE_CARD = "mixture_card.md"
MODEL_CARD = "model_card.md"
REPORT_DIR = "report"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp")
REPORT_SUFFIXES = (".md", ".json", ".jsonl", ".csv", ".yaml", ".yml", ".txt", ".html") \
    + PICTURE_SUFFIXES
# Model files worth uploading (checkpoint-*/ and optimizer states stay local).
MODEL_SKIP = re.compile(r"^(checkpoint-\d+|runs)(/|$)|(^|/)(optimizer|scheduler|rng_state.*|"
                        r"training_args)\.(pt|bin|pth)$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_main_process() -> bool:
    """Rank 0 of torch.distributed (or of the launcher's ``RANK``), True when alone."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return os.environ.get("RANK", "0") == "0"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide what a mixture or model is."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hf_mixture", "transformers", "datasets", "torch", "accelerate",
                 "huggingface_hub", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise HFMixtureError(f"repo_id {repo_id!r} is not a Hub repo id of the form owner/name.")
    return repo_id


def _template(name: str) -> str:
    return str(importlib.resources.files("hf_mixture.hub_cards") / name)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


# -- the mixture card -------------------------------------------------------------------------
@dataclass
class Materialized:
    """What :func:`stage_mixture_repo` drew into ``data/`` (for the card)."""

    sequences: int
    seq_len: int
    tokens: int
    shards: int
    fingerprint: str  # content of the data/ shards: stamps the README config (formats.hubstyle)


def render_mixture_card(mixture: Mixture, repo_id: str, *, store: Any = None,
                        total_tokens: int | None = None, source: str | None = None,
                        source_revision: str | None = None, report_files: Sequence[str] = (),
                        materialized: Materialized | None = None, license: str = "other",
                        versions: Mapping[str, str] | None = None):
    """The dataset card (``huggingface_hub.DatasetCard``) of a mixture repo.

    ``store`` + ``total_tokens`` add the MPT-style plan table; ``source`` /
    ``source_revision`` default to the store's record of the corpus it was made from.
    """
    import warnings

    from huggingface_hub import DatasetCard, DatasetCardData

    from .mixture.plan import MixturePlanWarning

    weights = mixture.weights()
    components = [{"name": _cell(c.label),
                   "query": _cell(f"`{json.dumps(c.query) if isinstance(c.query, dict) else c.query}`"
                                  if c.query else "(store component)"),
                   "weight": _fmt(c.weight), "proportion": f"{100 * weights[c.name]:.2f}%",
                   "max_epochs": _fmt(c.max_epochs)} for c in mixture.components]
    stages = [{"name": _cell(s.name or str(i)), "start": _fmt(s.start, 6),
               "weights": [f"{100 * w:.2f}%" for w in mixture.stage_weights(i).values()]}
              for i, s in enumerate(mixture.stages)]
    plan = None
    store_facts = None
    if store is not None:
        recorded = store.manifest.get("source") or {}
        source = source or recorded.get("repo_id") or recorded.get("path")
        source_revision = source_revision or recorded.get("revision")
        store_facts = {"components": len(store.components),
                       "tokens": f"{sum(store.num_tokens(c) for c in store.components):,}",
                       "tokenizer": store.tokenizer_name, "fingerprint": store.fingerprint}
        if total_tokens is not None:
            with warnings.catch_warnings():  # the table shows over-cap components itself
                warnings.simplefilter("ignore", MixturePlanWarning)
                plan = mixture.plan(int(total_tokens), store).to_markdown()
    pictures = [f for f in report_files if f.lower().endswith(PICTURE_SUFFIXES)]
    configs = None
    if materialized is not None:
        configs = stamp_configs([{"config_name": "default",
                                  "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
                                materialized.fingerprint)
    card_data = DatasetCardData(
        license=license, pretty_name=mixture.name or repo_id.split("/")[-1],
        task_categories=["text-generation"], tags=["hf-mixture", "data-mixture"],
        source_datasets=[source] if source and _REPO_ID.match(str(source)) else None,
        configs=configs,
    )
    return DatasetCard.from_template(
        card_data, template_path=_template(MIXTURE_CARD),
        title=mixture.name or repo_id, repo_id=repo_id, description=mixture.description,
        components=components, temperature=_fmt(mixture.temperature), stages=stages, plan=plan,
        fingerprint=mixture.fingerprint, seed=mixture.seed,
        source=f"`{source}`" if source else "not recorded",
        source_revision=f"`{source_revision}`" if source_revision else "not recorded",
        store=store_facts, versions=dict(versions or library_versions()),
        report_files=[f for f in report_files if f not in pictures], pictures=pictures,
        materialized=None if materialized is None else {
            "sequences": f"{materialized.sequences:,}", "seq_len": materialized.seq_len,
            "tokens": f"{materialized.tokens:,}"},
    )


# -- staging a mixture repo --------------------------------------------------------------------
def _report_files(report: str | os.PathLike | None, pictures: Iterable[str | os.PathLike]
                  ) -> dict[str, Path]:
    """``{path in repo: local file}`` for the search report and pictures.

    ``report`` is a file or a folder (``hf-mixture search``'s output: report.md, its PNGs,
    runs.jsonl, result.json); of a folder only the top-level files are taken.
    """
    out: dict[str, Path] = {}
    if report is not None:
        root = Path(report)
        if root.is_file():
            out[f"{REPORT_DIR}/{root.name}"] = root
        elif root.is_dir():
            # Top level only: a search folder also holds one sub-folder per proxy run.
            for f in sorted(root.iterdir()):
                if f.is_file() and f.suffix.lower() in REPORT_SUFFIXES:
                    out[f"{REPORT_DIR}/{f.name}"] = f
        else:
            raise HFMixtureError(f"Search report '{root}' does not exist.")
    for picture in pictures:
        p = Path(picture)
        if not p.is_file():
            raise HFMixtureError(f"Picture '{p}' does not exist.")
        if p.suffix.lower() not in PICTURE_SUFFIXES:
            raise HFMixtureError(f"Picture '{p}' is not an image ({', '.join(PICTURE_SUFFIXES)}).")
        out[f"{REPORT_DIR}/{p.name}"] = p
    return out


def _materialize(mixture: Mixture, store: Any, folder: Path, *, tokens: int, seq_len: int,
                 total_tokens: int | None, shard_sequences: int) -> Materialized:
    """Draw ``tokens`` tokens from the mixture in training order into parquet shards."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from .mixture import MixtureDataset

    count = tokens // seq_len
    if count < 1:
        raise HFMixtureError(f"materialize_tokens {tokens} is less than one {seq_len}-token "
                             "sequence.")
    data = MixtureDataset(store, mixture, seq_len=seq_len, total_tokens=total_tokens or tokens)
    sampler = data.sampler
    names = data.component_names
    shards = max(1, math.ceil(count / shard_sequences))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    dtype = pa.uint16() if store.vocab_size <= 2**16 else pa.uint32()
    done = 0
    with tqdm(total=count, desc="drawing mixed sequences", unit="seq") as bar:
        for shard in range(shards):
            n = min(shard_sequences, count - done)
            comps, ks, complete = sampler.choose(n)
            if not complete:
                raise HFMixtureError(f"The mixture's caps (max_epochs) run out after {done + len(comps)} "
                                     f"sequences; ask for fewer materialize_tokens.")
            ids = data.collate(comps, ks)["input_ids"].numpy()
            flat = pa.array(ids.reshape(-1).astype(np.uint32), type=pa.uint32()).cast(dtype)
            table = pa.table({
                "input_ids": pa.FixedSizeListArray.from_arrays(flat, seq_len).cast(
                    pa.list_(dtype)),
                "component": pa.array([names[c] for c in comps], type=pa.string()),
                "sample": pa.array(np.arange(done, done + n, dtype=np.int64)),
            })
            pq.write_table(table, folder / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet")
            done += n
            bar.update(n)
    fingerprint, _ = files_fingerprint(folder, [f"data/{p.name}" for p in (folder / "data").iterdir()])
    return Materialized(sequences=count, seq_len=seq_len, tokens=count * seq_len, shards=shards,
                        fingerprint=fingerprint)


def stage_mixture_repo(mixture: Mixture, folder: str | os.PathLike, *, repo_id: str,
                       store: Any = None, total_tokens: int | None = None,
                       report: str | os.PathLike | None = None,
                       pictures: Iterable[str | os.PathLike] = (), source: str | None = None,
                       source_revision: str | None = None, materialize_tokens: int | None = None,
                       seq_len: int = 2048, shard_sequences: int = 8192, license: str = "other",
                       overwrite: bool = False) -> Path:
    """Write the files of a mixture repo into ``folder`` (atomically): what a push commits.

    ``store`` (a :class:`~hf_mixture.formats.TokenStore` or its path) gives the plan
    table (with ``total_tokens``), the source corpus and, with ``materialize_tokens``,
    the mixed shards under ``data/``.

    >>> stage_mixture_repo(mixture, "out/mix", repo_id="me/mix")   # doctest: +SKIP
    PosixPath('out/mix')
    """
    from .mixture import Mixture

    if not isinstance(mixture, Mixture):
        raise HFMixtureError(f"Expected a Mixture, got {type(mixture).__name__}.")
    _check_repo_id(repo_id)
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise HFMixtureError(f"Output folder '{folder}' already exists; pass overwrite=True to "
                             "replace it.")
    if isinstance(store, (str, os.PathLike)):
        from .formats.token_store import TokenStore

        store = TokenStore(store)
    if materialize_tokens is not None and store is None:
        raise HFMixtureError("materialize_tokens needs the token store the mixture draws from "
                             "(store=...).")
    if total_tokens is not None and store is None:
        raise HFMixtureError("total_tokens (the plan table) needs the token store (store=...).")
    extra = _report_files(report, pictures)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        mixture.save(tmp / MIXTURE_FILE)
        materialized = None
        if materialize_tokens is not None:
            materialized = _materialize(mixture, store, tmp, tokens=int(materialize_tokens),
                                        seq_len=seq_len, total_tokens=total_tokens,
                                        shard_sequences=shard_sequences)
        for path_in_repo, local in extra.items():
            target = tmp / path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
        card = render_mixture_card(mixture, repo_id, store=store, total_tokens=total_tokens,
                                   source=source, source_revision=source_revision,
                                   report_files=sorted(extra), materialized=materialized,
                                   license=license)
        card.save(str(tmp / "README.md"))
    return folder


def commit_operations(folder: str | os.PathLike, *, skip: re.Pattern | None = None) -> list:
    """One ``CommitOperationAdd`` per file under ``folder`` (sorted; ``skip`` matches paths)."""
    from huggingface_hub import CommitOperationAdd

    root = Path(folder)
    ops = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if not f.is_file() or rel.startswith(".") or "/." in rel:
            continue
        if skip is not None and skip.search(rel):
            continue
        ops.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(f)))
    return ops


def _push_failure(err: BaseException, repo_id: str, token: str | None) -> str:
    """One sentence, naming what to do, for a failed push (offline, no network, no token, no
    permission); anything else keeps the Hub's own first line."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = f"Pushing to the Hub repo '{repo_id}' failed"
    if isinstance(err, OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        return (f"{where}: offline mode is on (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE on a "
                "machine with network access and push again.")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status == 401:
        if token is None and get_token() is None:
            return (f"{where}: no Hub token; run `hf auth login` (or set HF_TOKEN, or pass "
                    "token=...) with a token that has write access.")
        return (f"{where}: the Hub rejected the token (401); run `hf auth login` with a valid "
                "token that has write access.")
    if isinstance(err, HfHubHTTPError) and status == 403:
        return (f"{where}: the token has no write permission there (403); use a write token, "
                "or a repo id under your own user or an organization you can write to.")
    names = {c.__name__ for c in type(err).__mro__}
    if names & {"ConnectionError", "ConnectError", "ConnectTimeout", "TransportError",
                "Timeout", "TimeoutException", "NetworkError"} or isinstance(err, OSError):
        return (f"{where}: the Hub at {constants.ENDPOINT} could not be reached "
                f"({type(err).__name__}); check the network (or HF_ENDPOINT) and push again.")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{where}: {first}"


def _send(ops: Sequence[Any], repo_id: str, *, repo_type: str, token: str | None,
          private: bool, revision: str | None, commit_message: str, create_repo: bool) -> str:
    """One ``create_commit`` holding every operation (after creating the repo when asked)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)   # the token goes to HfApi only: never into a message or a log
    try:
        if create_repo:
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        info = api.create_commit(repo_id, ops, commit_message=commit_message, repo_type=repo_type,
                                 revision=revision)
    except Exception as err:  # noqa: BLE001 -- each Hub failure becomes one sentence below
        raise HFMixtureError(_push_failure(err, repo_id, token)) from None
    url = getattr(info, "commit_url", None) or str(info)
    logger.info("Pushed %d files to %s (%s).", len(ops), repo_id, url)
    return url


def push_mixture_to_hub(mixture: Mixture, repo_id: str, *, store: Any = None,
                        total_tokens: int | None = None, report: str | os.PathLike | None = None,
                        pictures: Iterable[str | os.PathLike] = (), source: str | None = None,
                        source_revision: str | None = None,
                        materialize_tokens: int | None = None, seq_len: int = 2048,
                        license: str = "other", private: bool = True, token: str | None = None,
                        revision: str | None = None, commit_message: str | None = None,
                        local_dir: str | os.PathLike | None = None, create_repo: bool = True
                        ) -> str | None:
    """Publish ``mixture`` as a Hub dataset repo in one commit; returns the commit URL.

    ``local_dir`` is the dry run: the exact files of the commit are written there
    (and its path returned) and nothing is sent.  On ranks other than 0 nothing
    is done and ``None`` returned.  See :func:`stage_mixture_repo` for the other
    arguments.

    >>> push_mixture_to_hub(mixture, "me/code-heavy", store="store", total_tokens=10**9)  # doctest: +SKIP
    'https://huggingface.co/datasets/me/code-heavy/commit/...'
    """
    kwargs = {"repo_id": repo_id, "store": store, "total_tokens": total_tokens, "report": report,
              "pictures": pictures, "source": source, "source_revision": source_revision,
              "materialize_tokens": materialize_tokens, "seq_len": seq_len, "license": license}
    if local_dir is not None:
        return str(stage_mixture_repo(mixture, local_dir, overwrite=True, **kwargs))
    if not is_main_process():
        return None
    with tempfile.TemporaryDirectory(prefix="hf_mixture_push_") as tmp:
        folder = stage_mixture_repo(mixture, Path(tmp) / "repo", **kwargs)
        message = commit_message or (f"Upload mixture {mixture.name or ''} "
                                     f"({mixture.fingerprint})").replace("  ", " ")
        return _send(commit_operations(folder), repo_id, repo_type="dataset", token=token,
                     private=private, revision=revision, commit_message=message,
                     create_repo=create_repo)


# -- loading a mixture ---------------------------------------------------------------------------
def _mixture_in(folder: Path, where: str) -> Mixture:
    from .mixture import Mixture

    for name in MIXTURE_FILES:
        if (folder / name).is_file():
            return Mixture.load(folder / name)
    raise HFMixtureError(f"{where} holds no {' / '.join(MIXTURE_FILES)}.")


def load_mixture(repo_id_or_path: str | os.PathLike, *, revision: str | None = None,
                 token: str | None = None) -> Mixture:
    """A mixture from a file, a folder holding ``mixture.yaml``, or a Hub dataset repo id.

    Hub repos are fetched with ``huggingface_hub.snapshot_download`` (only the
    mixture file; cached, and offline when ``HF_HUB_OFFLINE=1`` and cached).

    >>> load_mixture("me/code-heavy").weights()     # doctest: +SKIP
    {'code': 0.75, 'prose': 0.25}
    """
    from .mixture import Mixture

    path = Path(repo_id_or_path)
    if path.is_file():
        return Mixture.load(path)
    if path.is_dir():
        return _mixture_in(path, f"Folder '{path}'")
    text = str(repo_id_or_path)
    if not _REPO_ID.match(text):
        raise HFMixtureError(f"Mixture '{text}' is neither a file, a folder nor a Hub repo id "
                             "(owner/name).")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        local = snapshot_download(text, repo_type="dataset", revision=revision, token=token,
                                  allow_patterns=list(MIXTURE_FILES))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HFMixtureError(f"Mixture repo '{text}' could not be downloaded: {first}") from None
    return _mixture_in(Path(local), f"Hub dataset repo '{text}'")


# -- models ------------------------------------------------------------------------------------
def render_model_card(repo_id: str, *, num_parameters: int | None = None,
                      mixture: Mixture | None = None, mixture_repo: str | None = None,
                      weights_history: Sequence[Mapping[str, Any]] = (),
                      metrics: Mapping[str, float] | None = None, recipe_name: str | None = None,
                      recipe_text: str | None = None, steps: int | None = None,
                      license: str = "other", versions: Mapping[str, str] | None = None):
    """The model card (``huggingface_hub.ModelCard``): mixture repo + weights, recipe, metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    metrics = dict(metrics or {})
    names = mixture.component_names if mixture is not None else []
    start = list(weights_history[0]["weights"]) if weights_history else (
        list(mixture.weights().values()) if mixture is not None else [])
    end = list(weights_history[-1]["weights"]) if weights_history else start
    weights = [{"name": _cell(n), "start": f"{100 * a:.2f}%", "end": f"{100 * b:.2f}%"}
               for n, a, b in zip(names, start, end)]
    domain_metrics = []
    for key in sorted(metrics):
        m = re.fullmatch(r"eval_(.+)_loss", key)
        if m and m.group(1) in names:
            loss = metrics[key]
            ppl = metrics.get(f"eval_{m.group(1)}_perplexity")
            domain_metrics.append({"domain": _cell(m.group(1)), "loss": f"{loss:.4f}",
                                   "perplexity": "-" if ppl is None else f"{ppl:.2f}"})
    target_metric = None
    if metrics.get("eval_target_loss") is not None:
        ppl = metrics.get("eval_target_perplexity")
        target_metric = {"loss": f"{metrics['eval_target_loss']:.4f}",
                         "perplexity": "-" if ppl is None else f"{ppl:.2f}"}
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="text-generation",
        tags=["hf-mixture", "pretraining"], datasets=[mixture_repo] if mixture_repo else None,
        model_name=repo_id.split("/")[-1],
    )
    return ModelCard.from_template(
        card_data, template_path=_template(MODEL_CARD), title=repo_id.split("/")[-1],
        repo_id=repo_id,
        parameters=(f"{format_parameters(num_parameters)} ({num_parameters:,})" if num_parameters
                    else "an unrecorded number of"),
        mixture_repo=mixture_repo,
        mixture_fingerprint=mixture.fingerprint if mixture is not None else "not recorded",
        weights=weights, changes=max(0, len(weights_history) - 1),
        domain_metrics=domain_metrics, target_metric=target_metric, recipe_name=recipe_name,
        recipe=(recipe_text or "# recipe not recorded").rstrip(), steps=steps or "an unrecorded number of",
        versions=dict(versions or library_versions()),
    )


def push_model_to_hub(model_dir: str | os.PathLike, repo_id: str, *, mixture: Mixture | None = None,
                      mixture_repo: str | None = None, recipe_name: str | None = None,
                      recipe_text: str | None = None, metrics: Mapping[str, float] | None = None,
                      license: str = "other", private: bool = True, token: str | None = None,
                      revision: str | None = None, commit_message: str | None = None,
                      local_dir: str | os.PathLike | None = None, create_repo: bool = True
                      ) -> str | None:
    """Publish a trained model folder (``hf-mixture train`` output) with its card, in one commit.

    The card is rendered from the folder's ``run_info.json``, ``mixture.yaml``,
    ``mixture_history.json`` and ``eval_results.json`` (written by
    :func:`hf_mixture.train.train`), overridden by the arguments.  Checkpoints and
    optimizer states are not uploaded.  ``local_dir`` writes the commit's files
    there instead (dry run).

    >>> push_model_to_hub("runs/1b", "me/llama-1b-mix", mixture_repo="me/code-heavy")  # doctest: +SKIP
    """
    _check_repo_id(repo_id)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise HFMixtureError(f"Model folder '{model_dir}' has no config.json (save the model "
                             "first).")

    def read_json(name: str) -> Any:
        f = model_dir / name
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None

    if mixture is None and any((model_dir / n).is_file() for n in MIXTURE_FILES):
        mixture = _mixture_in(model_dir, f"Model folder '{model_dir}'")
    info = read_json("run_info.json") or {}
    history = read_json("mixture_history.json") or []
    if metrics is None:
        metrics = read_json("eval_results.json") or {}
    if recipe_text is None and (model_dir / "recipe.yaml").is_file():
        recipe_text = (model_dir / "recipe.yaml").read_text(encoding="utf-8")
    card = render_model_card(
        repo_id, num_parameters=info.get("num_parameters"), mixture=mixture,
        mixture_repo=mixture_repo, weights_history=history, metrics=metrics,
        recipe_name=Path(recipe_name).name if recipe_name else None, recipe_text=recipe_text,
        steps=info.get("global_step"), license=license)

    readme = str(card).encode("utf-8")
    ops = model_operations(model_dir, readme)
    if local_dir is not None:
        return str(write_operations(ops, local_dir))
    if not is_main_process():
        return None
    message = commit_message or ("Upload model trained on mixture "
                                 f"{mixture.fingerprint if mixture is not None else ''}").strip()
    return _send(ops, repo_id, repo_type="model", token=token, private=private,
                 revision=revision, commit_message=message, create_repo=create_repo)


def push_trained_model(cfg: Any, result: Any, mixture: Mixture) -> str | None:
    """Push a finished :func:`hf_mixture.train.train` run (``cfg.hub``) from the main process.

    Every other process returns None at once, so a launch of N ranks makes one commit.
    The mixture repo named in the card is ``hub.mixture_repo``, else ``data.mixture``
    when that is a Hub id (not a local path).
    """
    if not is_main_process():
        return None
    mixture_repo = cfg.hub.mixture_repo
    if mixture_repo is None and cfg.data.mixture and not Path(cfg.data.mixture).exists():
        mixture_repo = cfg.data.mixture
    recipe_text = Path(cfg.source).read_text(encoding="utf-8") if cfg.source else None
    return push_model_to_hub(result.output_dir, cfg.hub.model_repo, mixture=mixture,
                             mixture_repo=mixture_repo, recipe_name=cfg.source,
                             recipe_text=recipe_text, metrics=result.metrics,
                             private=cfg.hub.private, revision=cfg.hub.revision)


def model_operations(model_dir: str | os.PathLike, readme: bytes) -> list:
    """The commit of a model folder: its files (no checkpoints, optimizer states or an old
    README) and the rendered card as ``README.md``."""
    from huggingface_hub import CommitOperationAdd

    ops = [op for op in commit_operations(model_dir, skip=MODEL_SKIP)
           if op.path_in_repo != "README.md"]
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme))
    return sorted(ops, key=lambda op: op.path_in_repo)


def write_operations(ops: Sequence[Any], folder: str | os.PathLike) -> Path:
    """Write what a list of ``CommitOperationAdd`` would upload into ``folder`` (replaced)."""
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for op in ops:
            target = tmp / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            source = op.path_or_fileobj
            if isinstance(source, (bytes, bytearray)):
                target.write_bytes(source)
            else:
                shutil.copyfile(source, target)
    return folder
