"""YAML as users write it: ``yaml.safe_load`` semantics, but a key given twice is an error.

PyYAML keeps the last of two equal keys silently (``weight: 1`` then ``weight: 9`` is 9);
for a mixture or a recipe that is a wrong result, not a convenience.

>>> load_yaml("a: 1\\nb: 2", "x.yaml")
{'a': 1, 'b': 2}
>>> load_yaml("a: 1\\na: 2", "x.yaml")
Traceback (most recent call last):
...
hf_mixture.errors.HFMixtureError: x.yaml line 2: key 'a' appears twice in the same mapping.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import HFMixtureError


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` (no Python objects) that refuses duplicate mapping keys."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # PyYAML reports unhashable keys itself
        if key in seen:
            raise HFMixtureError(
                f"{loader.where} line {key_node.start_mark.line + 1}: key {key!r} appears twice "
                "in the same mapping.")
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str, where: str) -> Any:
    """Parse ``text`` (``where`` names it in messages) like ``yaml.safe_load``, duplicates refused."""
    loader = _StrictLoader(text)
    loader.where = where
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
