"""Metadata queries: which documents of a token store a mixture component holds.

A query is either a small Python-like boolean expression over per-document
metadata fields::

    cluster_id in [3, 7] and quality >= 0.5
    source == "code" or (source == "docs" and not quality < 0.2)
    0.2 <= quality < 0.8

or a dict of field -> value (equality) / list (membership), all ANDed::

    {"cluster_id": [3, 7], "source": "code"}

Expressions are parsed with :func:`ast.parse` (``mode="eval"``) and the tree is
walked against a whitelist of node types: names are fields, only constants
(str, int, float, bool) are values, and anything else — calls, attribute or
subscript access, arithmetic, lambdas, comprehensions — is refused.  Nothing is
ever ``eval``-ed or compiled.  A query evaluates vectorized with
``pyarrow.compute`` over the store's per-document metadata tables
(:meth:`TokenStore.metadata`).

A document whose table lacks a field (or holds null there) matches no
comparison on it, and neither does its negation (SQL's three-valued logic):
``not source == "code"`` never selects documents that have no source.

>>> q = parse_query('cluster_id in [3, 7] and quality >= 0.5')
>>> sorted(q.fields)
['cluster_id', 'quality']
>>> import pyarrow as pa
>>> table = pa.table({"cluster_id": [3, 4, 7], "quality": [0.9, 0.9, 0.1]})
>>> q.mask(table).tolist()
[True, False, False]
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import HFMixtureError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from ..formats.token_store import TokenStore

QuerySource = str | Mapping[str, Any]

# Python comparison operator node -> pyarrow.compute function name.
_COMPARE = {
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
}
# The operator to use when the constant is on the left: `0.5 <= quality` is `quality >= 0.5`.
_FLIPPED = {"equal": "equal", "not_equal": "not_equal", "less": "greater",
            "less_equal": "greater_equal", "greater": "less", "greater_equal": "less_equal"}
_SYMBOL = {"equal": "==", "not_equal": "!=", "less": "<", "less_equal": "<=",
           "greater": ">", "greater_equal": ">="}
_REFUSED = {
    ast.Call: "function calls",
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.BinOp: "arithmetic",
    ast.Lambda: "lambdas",
    ast.IfExp: "conditional expressions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignments",
    ast.Starred: "starred expressions",
}


# -- the parsed form: a tiny tree of plain tuples-as-classes ------------------------
@dataclass(frozen=True)
class _And:
    items: tuple


@dataclass(frozen=True)
class _Or:
    items: tuple


@dataclass(frozen=True)
class _Not:
    item: Any


@dataclass(frozen=True)
class _Compare:
    field: str
    op: str  # a pyarrow.compute function name
    value: Any


@dataclass(frozen=True)
class _In:
    field: str
    values: tuple
    negate: bool


@dataclass(frozen=True)
class _Flag:
    """A bare boolean field used as a condition: ``is_code``."""

    field: str


class Query:
    """A parsed metadata query; build it with :func:`parse_query`.

    >>> parse_query({"source": "code"}).fields
    frozenset({'source'})
    """

    def __init__(self, source: QuerySource, tree: Any):
        self.source = source
        self._tree = tree
        self.fields: frozenset[str] = frozenset(_fields(tree))

    def __repr__(self) -> str:
        return f"Query({self.source!r})"

    def mask(self, table: pa.Table) -> np.ndarray:
        """A boolean numpy array: row i of ``table`` matches the query."""
        import pyarrow.compute as pc

        result = _evaluate(self._tree, table, self.source)
        return np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=bool)


def describe(source: QuerySource) -> str:
    """The query as users wrote it, for error messages."""
    return repr(source) if isinstance(source, str) else repr(dict(source))


def parse_query(source: QuerySource) -> Query:
    """Parse an expression string or a field -> value dict into a :class:`Query`.

    Raises :class:`HFMixtureError` naming the query on a syntax error or a
    construct outside the whitelist.

    >>> parse_query("source == 'code' and not quality < 0.5").fields == {"source", "quality"}
    True
    """
    if isinstance(source, Mapping):
        return Query(dict(source), _parse_mapping(source))
    if not isinstance(source, str):
        raise HFMixtureError(
            f"A query must be a string or a mapping of field to value, got "
            f"{type(source).__name__} {source!r}."
        )
    text = source.strip()
    if not text:
        raise HFMixtureError("The query is empty; an empty query means 'the store component "
                             "of the same name' and is not evaluated.")
    shown = repr(source) if len(source) <= 120 else repr(source[:117] + "...")
    try:
        node = ast.parse(text, mode="eval")
        return Query(source, _condition(node.body, source))
    except SyntaxError as err:
        raise HFMixtureError(
            f"Query {shown} is not valid syntax ({err.msg} at column {err.offset})."
        ) from None
    except RecursionError:
        raise HFMixtureError(f"Query {shown} is nested too deeply to evaluate.") from None


def _parse_mapping(source: Mapping[str, Any]) -> Any:
    if not source:
        raise HFMixtureError("The query mapping is empty; name at least one field.")
    items = []
    for field, value in source.items():
        if not isinstance(field, str) or not field:
            raise HFMixtureError(
                f"Query {describe(source)}: field names must be non-empty strings, got {field!r}."
            )
        if isinstance(value, (list, tuple)):
            values = tuple(_check_constant(v, source, field) for v in value)
            items.append(_In(field, values, negate=False))
        else:
            items.append(_Compare(field, "equal", _check_constant(value, source, field)))
    return items[0] if len(items) == 1 else _And(tuple(items))


# Metadata integers are int64: a literal outside that range compares with nothing there.
_INT64 = (-2**63, 2**63 - 1)


def _check_int64(value: Any, source: QuerySource) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and \
            not _INT64[0] <= value <= _INT64[1]:
        raise HFMixtureError(f"Query {describe(source)} uses the integer {value}, outside the "
                             "64-bit range metadata holds.")
    return value


def _check_constant(value: Any, source: QuerySource, field: str) -> Any:
    if isinstance(value, (bool, str, int)):
        return _check_int64(value, source)
    if isinstance(value, float):
        if math.isnan(value):
            raise HFMixtureError(f"Query {describe(source)}: field {field!r} is compared with NaN, "
                                 "which equals nothing.")
        if not math.isfinite(value):
            raise HFMixtureError(f"Query {describe(source)}: field {field!r} is compared with "
                                 f"the non-finite number {value!r}.")
        return value
    raise HFMixtureError(
        f"Query {describe(source)}: field {field!r} is compared with {value!r}; only strings, "
        "numbers and booleans (or lists of them) are allowed."
    )


# -- the whitelist walk ----------------------------------------------------------------
def _refuse(node: ast.AST, source: str) -> HFMixtureError:
    what = _REFUSED.get(type(node), type(node).__name__)
    snippet = ast.get_source_segment(source.strip(), node) or type(node).__name__
    return HFMixtureError(
        f"Query {source!r} uses {what} ({snippet!r}); queries allow only fields, constants, "
        "comparisons, in / not in, and, or, not and parentheses."
    )


def _condition(node: ast.AST, source: str) -> Any:
    if isinstance(node, ast.BoolOp):
        items = tuple(_condition(v, source) for v in node.values)
        return _And(items) if isinstance(node.op, ast.And) else _Or(items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _Not(_condition(node.operand, source))
    if isinstance(node, ast.Compare):
        return _compare(node, source)
    if isinstance(node, ast.Name):
        return _Flag(node.id)
    if isinstance(node, ast.Constant):
        raise HFMixtureError(
            f"Query {source!r} has the constant {node.value!r} where a condition belongs; "
            "compare a field with it (e.g. field == value)."
        )
    raise _refuse(node, source)


def _compare(node: ast.Compare, source: str) -> Any:
    # `a < b <= c` is `a < b and b <= c`, as in Python.
    operands = [node.left, *node.comparators]
    parts = []
    for op, left, right in zip(node.ops, operands, operands[1:]):
        parts.append(_comparison(op, left, right, source))
    return parts[0] if len(parts) == 1 else _And(tuple(parts))


def _comparison(op: ast.cmpop, left: ast.AST, right: ast.AST, source: str) -> Any:
    if isinstance(op, (ast.In, ast.NotIn)):
        if not isinstance(left, ast.Name):
            raise HFMixtureError(
                f"Query {source!r}: the left side of 'in' must be a field name, e.g. "
                "cluster_id in [3, 7]."
            )
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            raise HFMixtureError(
                f"Query {source!r}: the right side of 'in' must be a list of constants, e.g. "
                f"{left.id} in [3, 7]."
            )
        values = tuple(_constant(e, source) for e in right.elts)
        return _In(left.id, values, negate=isinstance(op, ast.NotIn))
    if type(op) not in _COMPARE:
        raise HFMixtureError(
            f"Query {source!r} uses the operator {type(op).__name__!r}; use ==, !=, <, <=, >, "
            ">=, in or not in."
        )
    name = _COMPARE[type(op)]
    if isinstance(left, ast.Name) and not isinstance(right, ast.Name):
        return _Compare(left.id, name, _constant(right, source))
    if isinstance(right, ast.Name) and not isinstance(left, ast.Name):
        return _Compare(right.id, _FLIPPED[name], _constant(left, source))
    if isinstance(left, ast.Name):
        raise HFMixtureError(
            f"Query {source!r} compares two fields ({left.id} and {right.id}); compare a "
            f"field with a constant and quote strings, e.g. {left.id} == {right.id!r}."
        )
    _constant(left, source)  # refuses calls, attributes, ... before the generic complaint
    _constant(right, source)
    raise HFMixtureError(f"Query {source!r} compares two constants; one side must be a field.")


def _constant(node: ast.AST, source: str) -> Any:
    # Negative numbers parse as UnaryOp(USub, Constant): the only operator allowed on a value.
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)):
        value = node.operand.value
        if isinstance(value, float) and not math.isfinite(value):
            raise HFMixtureError(f"Query {source!r} uses the non-finite number {value!r}.")
        return _check_int64(-value if isinstance(node.op, ast.USub) else value, source)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (bool, str, int, float)):
            if isinstance(node.value, float) and not math.isfinite(node.value):
                raise HFMixtureError(f"Query {source!r} uses the non-finite number "
                                     f"{node.value!r}.")
            return _check_int64(node.value, source)
        raise HFMixtureError(
            f"Query {source!r} uses the constant {node.value!r}; only strings, numbers and "
            "True/False are allowed."
        )
    if isinstance(node, ast.Name):
        raise HFMixtureError(
            f"Query {source!r}: {node.id!r} stands where a value belongs; quote strings, "
            f"e.g. source == {node.id!r}."
        )
    raise _refuse(node, source)


def _fields(tree: Any) -> set[str]:
    if isinstance(tree, (_And, _Or)):
        return set().union(*(_fields(t) for t in tree.items))
    if isinstance(tree, _Not):
        return _fields(tree.item)
    return {tree.field}


# -- evaluation ------------------------------------------------------------------------
def _column(table: pa.Table, field: str):
    import pyarrow as pa

    if field in table.column_names:
        return table.column(field)
    # A table without the field: every row is unknown (null), so it matches nothing.
    return pa.nulls(table.num_rows)


def _keep_nulls(column, result):
    """Rows whose field is null stay null, so that `not (...)` cannot select them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), result)


def _evaluate(tree: Any, table: pa.Table, source: QuerySource):
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(tree, _And):
        result = _evaluate(tree.items[0], table, source)
        for item in tree.items[1:]:
            result = pc.and_kleene(result, _evaluate(item, table, source))
        return result
    if isinstance(tree, _Or):
        result = _evaluate(tree.items[0], table, source)
        for item in tree.items[1:]:
            result = pc.or_kleene(result, _evaluate(item, table, source))
        return result
    if isinstance(tree, _Not):
        return pc.invert(_evaluate(tree.item, table, source))
    column = _column(table, tree.field)
    if pa.types.is_null(column.type):
        return pa.nulls(table.num_rows, pa.bool_())
    try:
        if isinstance(tree, _Flag):
            if not pa.types.is_boolean(column.type):
                raise HFMixtureError(
                    f"Query {describe(source)} uses field {tree.field!r} as a condition, but it "
                    f"holds {column.type}, not booleans; compare it with a value."
                )
            return column
        if isinstance(tree, _Compare):
            return getattr(pc, tree.op)(column, pa.scalar(tree.value))
        # _In
        if not tree.values:
            result = pa.array(np.zeros(table.num_rows, dtype=bool))
        else:
            result = pc.is_in(column, value_set=pa.array(list(tree.values)))
        if tree.negate:
            result = pc.invert(result)
        return _keep_nulls(column, result)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
        value = tree.value if isinstance(tree, _Compare) else list(tree.values)
        op = _SYMBOL[tree.op] if isinstance(tree, _Compare) else (
            "not in" if tree.negate else "in")
        raise HFMixtureError(
            f"Query {describe(source)}: field {tree.field!r} holds {column.type} and cannot be "
            f"compared as `{tree.field} {op} {value!r}`."
        ) from None


# -- over a token store ----------------------------------------------------------------
def store_fields(store: TokenStore, split: str = "train") -> list[str]:
    """Every metadata field any component of ``store`` has in ``split``, sorted."""
    names: set[str] = set()
    for component in store.components:
        names.update(store.metadata(component, split).column_names)
    return sorted(names)


def select(store: TokenStore, query: QuerySource | Query, split: str = "train"
           ) -> dict[str, np.ndarray]:
    """Evaluate ``query`` over every component of ``store``.

    Returns ``{store component: ascending int64 document indices}`` for the
    store components with at least one match, in the store's component order.
    A field that no component's metadata has is an error naming the fields
    that exist.

    >>> select(store, "cluster_id in [0, 2]")          # doctest: +SKIP
    {'cluster_0': array([0, 1, ...]), 'cluster_2': array([...])}
    """
    parsed = query if isinstance(query, Query) else parse_query(query)
    known = store_fields(store, split)
    unknown = sorted(parsed.fields - set(known))
    if unknown:
        raise HFMixtureError(
            f"Query {describe(parsed.source)} names the field {unknown[0]!r}, which no "
            f"component of token store '{store.path}' has; its fields are "
            f"{', '.join(known) or '(none)'}."
        )
    out: dict[str, np.ndarray] = {}
    for component in store.components:
        table = store.metadata(component, split)
        if not table.num_rows:
            continue
        hits = np.flatnonzero(parsed.mask(table)).astype(np.int64)
        if hits.size:
            out[component] = hits
    return out
