"""Linear forms: what an aggregate's argument may be, and the exact coefficients it stands for.

Inside SUM, AVG, MIN and MAX only a linear expression of measure columns may appear: measures, their
sums and differences, and multiplication or division by a number. Anything else makes the engine a
computer over single rows: ``1 / (x - c)`` is a switch that is infinite on one value, a product of 64
copies of a measure is a power sum whose root is the largest value, a comparison turned into a number
is a filter on a column nobody may filter on. A linear form has none of these: it adds each row's
measures with fixed weights, so a cell's value is a fixed combination of per-measure totals.

That is also how the guard computes one: ``SUM(a * 2 - b / 100)`` is ``2 * SUM(a) - SUM(b) / 100``,
taken term by term. The engine adds up each measure on its own (a sum of integers in a type that cannot
overflow) and the coefficients are applied to the totals afterwards, exactly, outside the engine.

:data:`LINEAR_NODES` lists every node type accepted inside an aggregate with the reason it keeps the
form linear; ``tests/test_linear_forms.py`` fails when a node type is accepted without an entry.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NoReturn, cast

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, refuse, table_of
from dsbroker.guard.literals import MAX_NUMBER_CHARACTERS, number_in_range
from dsbroker.guard.sql_names import sql_name
from dsbroker.policy.model import ColumnLevel

# The widest value a coefficient may have, and the narrowest nonzero one: beyond these a number is not a
# coefficient anyone needs, and chains of them would only build huge exact rationals.
LITERAL_LIMIT = Fraction(10) ** 38
SMALLEST_LITERAL = Fraction(1, 10 ** 38)
KINDS = ("int", "decimal", "double")  # the type a computation is done in, narrowest first (as DuckDB types it)

LINEAR_NODES: dict[type[exp.Expr], str] = {
    exp.Column: "a measure column is the linear form with that measure's coefficient 1",
    exp.Literal: "a number is a constant (a coefficient once it multiplies or divides a form)",
    exp.Paren: "parentheses change nothing",
    exp.Neg: "the negation of a linear form negates every coefficient",
    exp.Add: "the sum of two linear forms adds their coefficients",
    exp.Sub: "the difference of two linear forms subtracts their coefficients",
    exp.Mul: "a linear form times a constant scales every coefficient; the product of two forms that both "
             "hold a measure is refused (it is quadratic)",
    exp.Div: "a linear form divided by a nonzero constant scales every coefficient; division by anything "
             "that holds a measure is refused",
}


@dataclass(frozen=True)
class LinearForm:
    """``sum(coefficient * measure) + constant``; ``kind`` is the type the caller's arithmetic implies."""

    terms: dict[str, Fraction] = field(default_factory=dict)  # measure column key -> coefficient
    constant: Fraction = Fraction(0)
    kind: str = "int"

    @property
    def is_constant(self) -> bool:
        """Whether no measure appears in the form."""
        return not self.terms


# reject_invalid_aggregates keeps each aggregate's form here, so that split_cells reads it once more only
# where no earlier rule did (the node's argument is not rewritten between the two).


def widest(*kinds: str) -> str:
    """The kind a computation over operands of ``kinds`` is done in."""
    return max(kinds, key=KINDS.index)


def number_literal(node: exp.Literal, *, rule: str, dataset: str) -> tuple[Fraction, str]:
    """The exact value of a numeric literal and its kind (``1`` int, ``1.5`` decimal, ``1e5`` double).

    Refuses ``NUMBER_OUT_OF_RANGE`` for a number with too many characters or beyond ±1e38 (or a
    nonzero one nearer zero than 1e-38), judged from its exponent before it is built."""
    text = node.name
    if not number_in_range(text):
        refuse(rule, "NUMBER_OUT_OF_RANGE", f"a number has more than {MAX_NUMBER_CHARACTERS} characters or lies "
               "beyond ±1e38", table=dataset)
    value = Fraction(decimal.Decimal(text))
    _check_range(value, rule, dataset)
    kind = "double" if "e" in text.lower() else "decimal" if "." in text else "int"
    return value, kind


def linear_form(node: exp.Expr, *, aggregate: str, columns: dict, dataset: str,
                rule: str = "reject_invalid_aggregates") -> LinearForm:
    """The linear form ``node`` (an aggregate's argument) stands for, or a refusal naming the rule and column.

    Column levels are checked here too: a column that is not a measure may not appear inside an
    aggregate at all (``AGGREGATE_ARGUMENT_NOT_ALLOWED``); a construct that is not linear is refused
    with ``AGGREGATE_ARGUMENT_NOT_LINEAR``.
    """
    return _Reader(aggregate, columns, dataset, rule).read(node)


class _Reader:
    def __init__(self, aggregate: str, columns: dict, dataset: str, rule: str) -> None:
        self.aggregate, self.columns, self.dataset, self.rule = aggregate, columns, dataset, rule

    def read(self, node: exp.Expr) -> LinearForm:
        if type(node) not in LINEAR_NODES:
            self.refuse_construct(node)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Literal):
            return self.literal(node)
        if isinstance(node, exp.Paren):
            return self.read(node.this)
        if isinstance(node, exp.Neg):
            inner = self.read(node.this)
            return self.scaled(inner, Fraction(-1), inner.kind)
        return self.binary(cast(exp.Binary, node))  # the rest of LINEAR_NODES: + - * /

    def refuse_construct(self, node: exp.Expr) -> NoReturn:
        for inner in node.find_all(exp.Column):  # a column that may not be aggregated at all says more
            if type(inner) is exp.Column:
                self.read(inner)
        column = node.find(exp.Column)
        refuse(self.rule, "AGGREGATE_ARGUMENT_NOT_LINEAR",
               f"inside {self.aggregate} only a linear expression of measures is allowed (measures, + and -, "
               f"and * or / by a number), not {sql_name(node)}", table=self.dataset,
               construct=sql_name(node), column=column.name if column is not None else None)

    def column(self, node: exp.Column) -> LinearForm:
        level = self.columns.get(column_key(node))
        if level is not ColumnLevel.MEASURE:
            named = level.value if level is not None else "hidden"
            refuse(self.rule, "AGGREGATE_ARGUMENT_NOT_ALLOWED",
                   f"{self.aggregate}({node.name}) is not allowed: {node.name!r} is a {named} column, and "
                   "aggregates take measure columns", table=table_of(node, self.dataset), column=node.name)
        return LinearForm({column_key(node): Fraction(1)})

    def literal(self, node: exp.Literal) -> LinearForm:
        if node.is_string:
            refuse(self.rule, "AGGREGATE_ARGUMENT_NOT_ALLOWED", f"{self.aggregate} may not take text literals",
                   table=self.dataset)
        value, kind = number_literal(node, rule=self.rule, dataset=self.dataset)
        return LinearForm(constant=value, kind=kind)

    def binary(self, node: exp.Binary) -> LinearForm:
        """``+``, ``-``, ``*`` and ``/``: linear when a product or a quotient has a number on one side."""
        left, right = self.read(node.left), self.read(node.right)
        kind = widest(left.kind, right.kind)
        if isinstance(node, (exp.Add, exp.Sub)):
            sign = 1 if isinstance(node, exp.Add) else -1
            terms = dict(left.terms)
            for measure, coefficient in right.terms.items():
                terms[measure] = terms.get(measure, Fraction(0)) + sign * coefficient
            return self.checked(LinearForm(terms, left.constant + sign * right.constant, kind))
        if isinstance(node, exp.Mul):
            if not left.is_constant and not right.is_constant:
                self.not_linear(node, "a product of two expressions that both hold a measure")
            form, factor = (right, left.constant) if left.is_constant else (left, right.constant)
            return self.scaled(form, factor, kind)
        if not right.is_constant:  # exp.Div
            self.not_linear(node, "a division by an expression that holds a measure")
        if right.constant == 0:
            refuse(self.rule, "AGGREGATE_ARGUMENT_NOT_LINEAR", f"inside {self.aggregate} a division by zero is "
                   "not allowed", table=self.dataset, construct="DIV")
        return self.scaled(left, 1 / right.constant, "double")  # DuckDB's / always gives a DOUBLE

    def scaled(self, form: LinearForm, factor: Fraction, kind: str) -> LinearForm:
        return self.checked(LinearForm({m: c * factor for m, c in form.terms.items()}, form.constant * factor, kind))

    def checked(self, form: LinearForm) -> LinearForm:
        for value in (*form.terms.values(), form.constant):
            _check_range(value, self.rule, self.dataset)
        return form

    def not_linear(self, node: exp.Expr, what: str) -> NoReturn:
        column = node.find(exp.Column)
        refuse(self.rule, "AGGREGATE_ARGUMENT_NOT_LINEAR",
               f"inside {self.aggregate} only a linear expression of measures is allowed; {what} is not "
               "(compute with the aggregates' results instead, e.g. SUM(a) / SUM(b))", table=self.dataset,
               construct=sql_name(node), column=column.name if column is not None else None)


def _check_range(value: Fraction, rule: str, dataset: str) -> None:
    if abs(value) > LITERAL_LIMIT or (value and abs(value) < SMALLEST_LITERAL):
        refuse(rule, "NUMBER_OUT_OF_RANGE", "a number or coefficient is beyond ±1e38 or nearer zero than "
               "1e-38; scale the result instead", table=dataset)
