"""A small, safe predicate language over partition keys.

Filters are parsed with :func:`ast.parse` and checked against a whitelist of node types;
they are never evaluated by Python. Evaluation walks the tree with numpy, one vectorised
operation per node, over columns of key values (one entry per partition).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import numpy
import numpy.typing as npt

from dask_zcollection.errors import FilterError

__all__ = ["FilterLike", "PartitionFilter", "compile_filter"]

_INT64: Final = numpy.iinfo(numpy.int64)
#: Deepest nesting of and/or/not a filter may have (checking, rendering and
#: evaluating recurse; a bound keeps them far from Python's recursion limit).
MAX_DEPTH: Final = 100
_COMPARE: Final[dict[type[ast.cmpop], Callable[[Any, Any], Any]]] = {
    ast.Eq: numpy.equal,
    ast.NotEq: numpy.not_equal,
    ast.Lt: numpy.less,
    ast.LtE: numpy.less_equal,
    ast.Gt: numpy.greater,
    ast.GtE: numpy.greater_equal,
}
_HINTS: Final[dict[type[ast.AST], str]] = {
    ast.BinOp: "arithmetic and the bitwise operators & | ~ are not supported; use and/or/not",
    ast.Call: "function calls are not allowed",
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
}


def _fragment(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every parsed node
        return type(node).__name__


def _short(text: str, limit: int = 200) -> str:
    """``text``, cut to ``limit`` characters for a message."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _reject(node: ast.AST, source: str, why: str | None = None) -> FilterError:
    hint = why or _HINTS.get(type(node), f"{type(node).__name__} is not allowed")
    fragment = _short(_fragment(node))
    return FilterError(f"invalid partition filter {_short(source)!r}: {fragment!r}: {hint}")


class _Checker:
    """Validate a parsed filter and rewrite it into canonical form.

    Every expression node is typed ``int`` (a key name or an int literal), ``bool`` (a
    predicate) or ``set`` (a collection literal, only right of ``in`` / ``not in``).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.names: set[str] = set()

    def predicate(self, node: ast.expr, depth: int = 0) -> ast.expr:
        if depth > MAX_DEPTH:
            raise FilterError(
                f"invalid partition filter {_short(self.source)!r}: nested deeper than "
                f"{MAX_DEPTH} levels of and/or/not"
            )
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return node
        if isinstance(node, ast.BoolOp):
            # Flatten nested and/and, or/or: one canonical tree per meaning of the text.
            values: list[ast.expr] = []
            for value in node.values:
                checked = self.predicate(value, depth + 1)
                same = isinstance(checked, ast.BoolOp) and type(checked.op) is type(node.op)
                values.extend(checked.values if same else [checked])  # type: ignore[attr-defined]
            return ast.BoolOp(op=node.op, values=values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ast.UnaryOp(op=node.op, operand=self.predicate(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name | ast.Constant) or (
            isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
        ):
            self.integer(node)  # report a bad literal before the type mismatch
            raise _reject(node, self.source, "expected a comparison, e.g. 'key == 1'")
        raise _reject(node, self.source)

    def integer(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.Name):
            self.names.add(node.id)
            return ast.Name(id=node.id, ctx=ast.Load())
        return ast.Constant(value=self.literal(node))

    def literal(self, node: ast.expr) -> int:
        negative = False
        literal: ast.expr = node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            negative, literal = True, node.operand
        if isinstance(literal, ast.Name):
            raise _reject(node, self.source, "only integer literals are allowed here")
        if not isinstance(literal, ast.Constant):
            raise _reject(node, self.source, "expected a key name or an integer literal")
        value = literal.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise _reject(node, self.source, "only integer literals are allowed")
        value = -value if negative else value
        if not _INT64.min <= value <= _INT64.max:
            raise _reject(node, self.source, "integer literal out of the int64 range")
        return value

    def collection(self, node: ast.expr) -> ast.expr:
        if not isinstance(node, ast.Tuple | ast.List | ast.Set):
            raise _reject(node, self.source, "'in' needs a tuple, list or set of integers")
        values = sorted({self.literal(e) for e in node.elts})
        return ast.Tuple(elts=[ast.Constant(value=v) for v in values], ctx=ast.Load())

    def compare(self, node: ast.Compare) -> ast.expr:
        left = self.integer(node.left)
        comparators: list[ast.expr] = []
        last = len(node.ops) - 1
        for i, (op, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
            if isinstance(op, ast.In | ast.NotIn):
                if i != last:
                    raise _reject(
                        node, self.source, "a collection cannot be compared; split the chain"
                    )
                comparators.append(self.collection(right))
            elif type(op) in _COMPARE:
                comparators.append(self.integer(right))
            else:
                raise _reject(node, self.source, "only == != < <= > >= in, not in compare keys")
        return ast.Compare(left=left, ops=list(node.ops), comparators=comparators)


@functools.lru_cache(maxsize=1024)
def _parse(source: str) -> tuple[ast.expr, frozenset[str], str]:
    """Parse, validate and canonicalise ``source``: (tree, names used, canonical text)."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise FilterError(f"invalid partition filter {_short(source)!r}: {err.msg}") from err
    except (RecursionError, MemoryError) as err:  # the parser's own bound on nesting
        raise FilterError(
            f"invalid partition filter {_short(source)!r}: too deeply nested to parse"
        ) from err
    except ValueError as err:  # e.g. a NUL character
        raise FilterError(f"invalid partition filter {_short(source)!r}: {err}") from err
    checker = _Checker(source)
    body = ast.fix_missing_locations(ast.Expression(body=checker.predicate(tree.body))).body
    return body, frozenset(checker.names), _render(body)


_SYMBOLS: Final[dict[type[ast.cmpop], str]] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
# Binding strength, loosest first; an operand binding looser than required is parenthesised.
_OR, _AND, _NOT, _ATOM = 1, 2, 3, 4


def _render(node: ast.expr, required: int = _OR) -> str:
    """Canonical text of a validated tree (``ast.unparse`` adds spurious parentheses)."""
    if isinstance(node, ast.BoolOp):
        own = _AND if isinstance(node.op, ast.And) else _OR
        joiner = " and " if own == _AND else " or "
        text = joiner.join(_render(v, own + 1) for v in node.values)
    elif isinstance(node, ast.UnaryOp):
        own, text = _NOT, "not " + _render(node.operand, _NOT)
    elif isinstance(node, ast.Compare):
        own = _ATOM
        parts = [_render(node.left)]
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            parts += [_SYMBOLS[type(op)], _render(comparator)]
        text = " ".join(parts)
    elif isinstance(node, ast.Tuple):
        items = [_render(e) for e in node.elts]
        own, text = _ATOM, f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    elif isinstance(node, ast.Name):
        own, text = _ATOM, node.id
    else:
        assert isinstance(node, ast.Constant)
        own, text = _ATOM, repr(node.value)
    return f"({text})" if own < required else text


def _evaluate(node: ast.expr, columns: Mapping[str, Any]) -> Any:
    """Evaluate a validated tree; results are bool arrays or Python scalars."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return columns[node.id]
    if isinstance(node, ast.BoolOp):
        combine = numpy.logical_and if isinstance(node.op, ast.And) else numpy.logical_or
        result = _evaluate(node.values[0], columns)
        for value in node.values[1:]:
            result = combine(result, _evaluate(value, columns))
        return result
    if isinstance(node, ast.UnaryOp):  # only `not` survives validation
        return numpy.logical_not(_evaluate(node.operand, columns))
    if isinstance(node, ast.Compare):
        result = True
        left = _evaluate(node.left, columns)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                assert isinstance(comparator, ast.Tuple)
                choices = numpy.array([e.value for e in comparator.elts], dtype=numpy.int64)  # type: ignore[attr-defined]
                test = numpy.isin(left, choices, invert=isinstance(op, ast.NotIn))
            else:
                right = _evaluate(comparator, columns)
                test = _COMPARE[type(op)](left, right)
                left = right
            result = test if result is True else numpy.logical_and(result, test)
        return result
    raise AssertionError(f"unexpected node {ast.dump(node)}")  # pragma: no cover


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionFilter:
    """A validated predicate over partition keys.

    Only the canonical text is stored, so a filter is hashable, picklable and tokenises
    deterministically; the parsed tree is cached per process.

    Parameters
    ----------
    source
        Filter text, e.g. ``"year == 2024 and 3 <= month < 6"``; canonicalised on creation.

    Examples
    --------
    >>> import numpy
    >>> f = PartitionFilter("year == 2024 and month in (1, 2)")
    >>> f({"year": numpy.array([2024, 2024, 2023]), "month": numpy.array([1, 3, 1])})
    array([ True, False, False])
    """

    source: str
    """Canonical text of the predicate."""

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise FilterError(f"partition filter source must be a str, got {self.source!r}")
        object.__setattr__(self, "source", _parse(self.source)[2])

    @property
    def names(self) -> frozenset[str]:
        """Key names the predicate reads."""
        return _parse(self.source)[1]

    def __call__(
        self, columns: Mapping[str, npt.ArrayLike], size: int | None = None
    ) -> npt.NDArray[numpy.bool_]:
        """Evaluate on key columns (one entry per partition).

        Parameters
        ----------
        columns
            Key name -> 1-D integer array; must hold every name in :attr:`names`.
        size
            Number of partitions; only needed when ``columns`` is empty.

        Returns
        -------
        numpy.ndarray
            Boolean mask of the partitions selected.
        """
        tree, names, _ = _parse(self.source)
        missing = names.difference(columns)
        if missing:
            raise FilterError(
                f"partition filter {self.source!r} uses keys {sorted(missing)!r} "
                f"not in {sorted(columns)!r}"
            )
        arrays = {name: numpy.asarray(columns[name]) for name in names}
        if size is None:
            first = next(iter(arrays.values()), None)
            if first is None:
                first = next((numpy.asarray(c) for c in columns.values()), None)
            if first is None:
                raise FilterError("cannot size the result of a filter evaluated on no columns")
            size = len(first)
        result = numpy.broadcast_to(
            numpy.asarray(_evaluate(tree, arrays), dtype=numpy.bool_), (size,)
        )
        return numpy.array(result, dtype=numpy.bool_)

    def __and__(self, other: PartitionFilter) -> PartitionFilter:
        """Both predicates must hold."""
        if not isinstance(other, PartitionFilter):
            return NotImplemented
        return PartitionFilter(f"({self.source}) and ({other.source})")

    def __or__(self, other: PartitionFilter) -> PartitionFilter:
        """Either predicate holds."""
        if not isinstance(other, PartitionFilter):
            return NotImplemented
        return PartitionFilter(f"({self.source}) or ({other.source})")

    def __invert__(self) -> PartitionFilter:
        """The predicate does not hold."""
        return PartitionFilter(f"not ({self.source})")

    def __str__(self) -> str:
        return self.source


FilterLike = str | Mapping[str, Any] | PartitionFilter | None


def _mapping_source(expr: Mapping[str, Any]) -> str:
    """``{"year": 2024, "month": [1, 2], "day": slice(1, 10)}`` -> filter text."""
    terms: list[str] = []
    for key, value in expr.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise FilterError(f"invalid partition key {key!r} in filter {expr!r}")
        if isinstance(value, slice):
            if value.step is not None:
                raise FilterError(f"partition filter on {key!r}: slices cannot have a step")
            low, high = (_int_value(key, v, allow_none=True) for v in (value.start, value.stop))
            if low is not None:
                terms.append(f"{key} >= {low}")
            if high is not None:
                terms.append(f"{key} <= {high}")
        elif isinstance(value, str | bytes) or not isinstance(value, Iterable):
            terms.append(f"{key} == {_int_value(key, value)}")
        else:
            choices = ", ".join(str(_int_value(key, v)) for v in value)
            terms.append(f"{key} in ({choices},)" if choices else f"{key} in ()")
    return " and ".join(terms) or "True"


def _int_value(key: str, value: Any, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool | numpy.bool_) or not isinstance(value, int | numpy.integer):
        raise FilterError(f"partition filter on {key!r}: expected integers, got {value!r}")
    return int(value)


def compile_filter(expr: FilterLike, keys: Sequence[str]) -> PartitionFilter | None:
    """Build a :class:`PartitionFilter` and check it only uses ``keys``.

    Parameters
    ----------
    expr
        * a string in a safe subset of Python: key names, integer literals, comparisons
          (chained too: ``3 <= month < 6``), ``in`` / ``not in`` a tuple, list or set of
          integers, ``and`` / ``or`` / ``not``, parentheses, ``True`` / ``False``;
        * a mapping key -> int (equality), collection of ints (membership) or
          ``slice(low, high)`` (``low <= key <= high``, inclusive; ``None`` is open);
        * a :class:`PartitionFilter`;
        * ``None``: no filter.
    keys
        The key names of the partitioning.

    Returns
    -------
    PartitionFilter or None

    Raises
    ------
    FilterError
        On a syntax error, a construct outside the language, or an unknown key name.

    Examples
    --------
    >>> compile_filter({"year": 2024, "month": slice(3, 5)}, ("year", "month")).source
    'year == 2024 and month >= 3 and month <= 5'
    """
    if expr is None:
        return None
    if isinstance(expr, PartitionFilter):
        result = expr
    elif isinstance(expr, str):
        result = PartitionFilter(expr)
    elif isinstance(expr, Mapping):
        result = PartitionFilter(_mapping_source(expr))
    else:
        raise FilterError(
            f"a partition filter must be a str, a mapping or a PartitionFilter, got {expr!r}"
        )
    unknown = sorted(result.names.difference(keys))
    if unknown:
        raise FilterError(
            f"unknown partition key {', '.join(map(repr, unknown))} in filter "
            f"{result.source!r}; valid keys: {', '.join(keys)}"
        )
    return result
