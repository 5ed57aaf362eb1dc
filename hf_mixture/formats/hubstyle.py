"""Hub-style dataset folders (README ``configs:``) that ``datasets`` always loads fresh.

Why this module exists: ``datasets`` 5 caches a *local folder whose README carries
``configs:``* under ``<HF_DATASETS_CACHE>/<folder name>/<config>/<version>/<hash>``,
where ``<hash>`` is ``Hasher.hash({"dataset_infos": ..., "builder_configs": ...})``
of the README's YAML (``datasets.load.LocalDatasetModuleFactory.get_module``).  The
builder configs hold the *patterns* (``cluster_3/*.parquet``), not the files they
match, and neither the folder's absolute path nor any file's size or mtime enters
the hash.  So two corpora that share a folder name, or one corpus rewritten in
place, share one cache entry, and ``load_dataset`` returns the first one's rows.

Every field of a config entry that the builder config knows is hashed, and
``description`` is a field of every ``datasets.BuilderConfig``.  So every folder
hf_mixture writes stamps each config with the content fingerprint of its files
(:func:`stamp_configs`): different content, different hash, fresh load; the same
content loads from the cache.  On the Hub nothing changes (the commit hash
already keeps revisions apart, and ``description`` is an ordinary config field).

Folders that hf_mixture did not write (a user's input or search target) cannot be
stamped, so :func:`load_folder` resolves their ``configs:`` to the files
themselves and hands those to the packaged builder, whose cache key includes each
file's path and modification time.

>>> stamp_configs([{"config_name": "c", "data_files": "c/*.parquet"}], "0123456789abcdef")
[{'config_name': 'c', 'data_files': 'c/*.parquet', 'description': 'hf_mixture content 0123456789abcdef'}]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import file_sha256, short_hash
from ..errors import HFMixtureError

STAMP_PREFIX = "hf_mixture content"


def files_fingerprint(root: str | os.PathLike, rels: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """``(fingerprint, {rel: {"bytes", "sha256"}})`` of the files ``rels`` under ``root``.

    Each file is hashed in 1 MiB blocks (never whole in memory); the fingerprint is
    a short hash of the sorted ``(rel, sha256)`` pairs, so it changes exactly when a
    file's content, name or presence does.
    """
    root = Path(root)
    files = {}
    for rel in sorted(rels):
        path = root / rel
        files[rel] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return short_hash([[rel, f["sha256"]] for rel, f in files.items()]), files


def stamp_configs(configs: Sequence[Mapping[str, Any]], fingerprint: str,
                  descriptions: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """``configs`` with ``description: "hf_mixture content <fingerprint>[: <text>]"`` on each.

    ``descriptions`` adds human text per config name (a cluster's top terms).
    """
    out = []
    for cfg in configs:
        text = (descriptions or {}).get(cfg["config_name"])
        stamp = f"{STAMP_PREFIX} {fingerprint}" + (f": {text}" if text else "")
        out.append({**cfg, "description": stamp})
    return out


def config_data_files(folder: str | os.PathLike, name: str | None = None
                      ) -> tuple[str, dict[str, list[str]]]:
    """``(builder, {split: [absolute file paths]})`` of config ``name`` of a local folder.

    Follows the folder's README ``configs:`` when it has them (``name`` = None picks the
    default config, as ``datasets`` does) and ``datasets``' own file patterns otherwise.
    """
    from datasets.data_files import DataFilesDict, get_data_patterns, sanitize_patterns
    from datasets.load import infer_module_for_data_files
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    folder = Path(folder).expanduser().resolve()
    readme = folder / "README.md"
    configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(readme).data) \
        if readme.is_file() else MetadataConfigs()
    base = folder
    if configs:
        chosen = name or configs.get_default_config_name() or next(iter(configs))
        if chosen not in configs:
            raise HFMixtureError(
                f"Folder '{folder}' has no dataset config '{chosen}'; its configs are "
                f"{', '.join(configs)}.")
        entry = configs[chosen]
        if entry.get("data_dir"):
            base = folder / entry["data_dir"]
        patterns = (sanitize_patterns(entry["data_files"]) if entry.get("data_files")
                    else get_data_patterns(str(base)))
    else:
        if name not in (None, "default"):
            raise HFMixtureError(f"Folder '{folder}' has no README configs, so no config '{name}'.")
        patterns = get_data_patterns(str(base))
    data_files = DataFilesDict.from_patterns(patterns, base_path=str(base))
    builder, _ = infer_module_for_data_files(data_files, path=str(folder))
    return builder, {split: [str(f) for f in files] for split, files in data_files.items()}


def load_folder(folder: str | os.PathLike, name: str | None = None, split: str | None = None,
                **kwargs: Any):
    """``datasets.load_dataset`` of a local folder that always reads the files as they are now.

    The folder's config is resolved to its files (:func:`config_data_files`) and loaded
    with the packaged builder (``parquet``, ``json``, ...), whose cache key covers each
    file's path and mtime, so a folder rewritten in place or another folder of the same
    name never returns cached rows.  ``kwargs`` go to ``load_dataset``.
    """
    import datasets

    builder, data_files = config_data_files(folder, name)
    return datasets.load_dataset(builder, data_files=data_files, split=split, **kwargs)
