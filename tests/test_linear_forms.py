"""Inside an aggregate only linear forms of measures: every construct the guard accepts there is listed
with the reason it keeps the form linear, and nothing else gets through."""

from __future__ import annotations

import inspect
import re
from fractions import Fraction
from pathlib import Path

import pytest
import sqlglot
import sqlglot.expressions as exp

from dsbroker.errors import GuardError
from dsbroker.guard.linear_forms import LINEAR_NODES, linear_form
from dsbroker.policy.model import ColumnLevel

COLUMNS = {"vat_paid": ColumnLevel.MEASURE, "revenue": ColumnLevel.MEASURE, "street_code": ColumnLevel.GROUP}
# The reviewed list. Adding a node type to LINEAR_NODES fails this test until it is added here too,
# with the argument for its linearity read and agreed in review.
REVIEWED = {exp.Column, exp.Literal, exp.Paren, exp.Neg, exp.Add, exp.Sub, exp.Mul, exp.Div}


def form(sql: str):
    return linear_form(sqlglot.parse_one(sql, read="duckdb"), aggregate="SUM", columns=COLUMNS,
                       dataset="tax.declarations")


def test_every_accepted_construct_is_reviewed_and_says_why_it_is_linear():
    assert set(LINEAR_NODES) == REVIEWED
    assert all(len(reason) > 20 for reason in LINEAR_NODES.values())


def _instances():
    """One instance of every sqlglot expression type, built over measure columns where it takes arguments."""
    measure, number = exp.column("vat_paid"), exp.Literal.number(2)
    for cls in {c for _, c in inspect.getmembers(exp, inspect.isclass) if issubclass(c, exp.Expression)}:
        for args in ({"this": measure.copy(), "expression": number.copy()}, {"this": measure.copy()},
                     {"this": number.copy(), "expression": measure.copy()}, {}):
            try:
                node = cls(**{k: v for k, v in args.items() if k in cls.arg_types})
            except Exception:  # noqa: BLE001 - a type that cannot be built this way is not one a parser emits so
                continue
            if not node.error_messages():  # every mandatory argument is there: a node a parser could emit
                yield cls, node
                break


def test_no_other_node_type_is_accepted_inside_an_aggregate():
    accepted, tried = set(), 0
    for cls, node in _instances():
        tried += 1
        try:
            linear_form(node, aggregate="SUM", columns=COLUMNS, dataset="tax.declarations")
        except GuardError:
            continue
        except Exception as error:  # noqa: BLE001 - anything but a refusal is a bug
            pytest.fail(f"{cls.__name__} made the linear form reader fail with {error!r}")
        accepted.add(cls)
    assert accepted <= set(LINEAR_NODES), f"accepted without a linearity argument: {accepted - set(LINEAR_NODES)}"
    assert tried > 500 and {exp.Add, exp.Mul, exp.Neg} <= accepted  # the enumeration reached what it should


@pytest.mark.parametrize("sql, terms", [
    ("vat_paid", {"vat_paid": 1}),
    ("vat_paid * 2 - revenue / 4", {"vat_paid": 2, "revenue": Fraction(-1, 4)}),
    ("-(vat_paid - revenue) * 0.5", {"vat_paid": Fraction(-1, 2), "revenue": Fraction(1, 2)}),
    ("3 * (vat_paid + 2 * revenue) + vat_paid", {"vat_paid": 4, "revenue": 6}),
    ("vat_paid / 3 * 3", {"vat_paid": 1}),
])
def test_the_coefficients_are_exact(sql, terms):
    assert form(sql).terms == {measure: Fraction(value) for measure, value in terms.items()}


@pytest.mark.parametrize("sql, reason", [
    ("vat_paid * revenue", "AGGREGATE_ARGUMENT_NOT_LINEAR"),
    ("vat_paid / revenue", "AGGREGATE_ARGUMENT_NOT_LINEAR"),
    ("1 / (vat_paid - 5)", "AGGREGATE_ARGUMENT_NOT_LINEAR"),
    ("vat_paid / (2 - 2)", "AGGREGATE_ARGUMENT_NOT_LINEAR"),
    ("vat_paid > 5", "AGGREGATE_ARGUMENT_NOT_LINEAR"),
    ("abs(vat_paid)", "AGGREGATE_ARGUMENT_NOT_LINEAR"),
    ("vat_paid * street_code", "AGGREGATE_ARGUMENT_NOT_ALLOWED"),
    ("vat_paid * 1e30 * 1e30", "NUMBER_OUT_OF_RANGE"),
    ("vat_paid * 1" + "0" * 70, "NUMBER_OUT_OF_RANGE"),
])
def test_anything_else_is_refused_naming_why(sql, reason):
    with pytest.raises(GuardError) as caught:
        form(sql)
    assert caught.value.reason == reason


def test_the_guard_names_its_internal_columns_in_one_module():
    guard = Path(__file__).resolve().parent.parent / "dsbroker" / "guard"
    for path in guard.glob("*.py"):
        if path.name == "internal_names.py":
            continue
        found = re.findall(r"""["']__[a-z]""", path.read_text(encoding="utf-8"))
        assert not found, f"{path.name} writes an internal name itself: {found}"
