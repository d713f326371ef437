"""reject_mistyped_key_texts: in HAVING, a strftime key's text is compared only with texts.

HAVING on a group key reads the key, not the data: the sandbox evaluates it on the released keys, after
disclosure control, as it does ``street_code >= '320102003'``. A strftime key (``date_texts``) is a text the
sandbox writes from the released year or month, so ``strftime(period, '%Y-%m') >= '2025-06'`` (or by its
alias) compares two texts, exactly as DuckDB compares the text it would write; any range, ``<>``, NOT, IN and
BETWEEN of texts is as safe as equality here, since only released keys are tested.

Compared with anything else, the answer would be no engine's: DuckDB casts ``2025`` to a text for ``y = 2025``
but refuses ``y >= 2025`` and ``m >= DATE '2025-06-01'``, PostgreSQL refuses all three, and the sandbox, which
compares a text with a text only, would drop every row without saying why. So the text stands in HAVING only
as one side of a comparison, IN or BETWEEN whose other sides are text literals or strftime keys, and is
refused otherwise (a number, a date, a column, arithmetic, a bare truth value): DATE_TEXT_MISTYPED.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import refuse
from dsbroker.guard.date_texts import strftime_format

_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def reject_mistyped_key_texts(expression: exp.Select, dataset: str) -> exp.Select:
    """Refuse a strftime key in HAVING that is not compared with text literals or strftime keys."""
    having = expression.args.get("having")
    if having is None:
        return expression
    for node in list(having.this.find_all(exp.TimeToStr)):
        if strftime_format(node) is None:
            continue  # another format: reject_unsupported_syntax has refused it
        for other in _other_operands(node, dataset):
            if not (_is_text_literal(other) or strftime_format(other) is not None):
                _refuse(node, dataset, f"{node.this.name}'s text is compared with something other than a text "
                                       "(write the year or month as a text literal, e.g. '2025' or '2025-06')")
    return expression


def _other_operands(node: exp.Expr, dataset: str) -> list[exp.Expr]:
    """The operands beside ``node`` of the comparison, IN or BETWEEN it is one side of (parentheses skipped)."""
    inner: exp.Expr = node
    parent = node.parent
    while isinstance(parent, exp.Paren):
        inner, parent = parent, parent.parent
    if isinstance(parent, _COMPARISONS):
        operands = [parent.left, parent.right]
    elif isinstance(parent, exp.In) and not parent.args.get("query") and not parent.args.get("unnest"):
        operands = [parent.this, *parent.expressions]
    elif isinstance(parent, exp.Between):
        operands = [parent.this, parent.args["low"], parent.args["high"]]
    else:
        _refuse(node, dataset, f"{node.this.name}'s text may stand in HAVING only in a comparison, IN or BETWEEN "
                               "with text literals")
    return [operand.unnest() for operand in operands if operand is not inner]


def _is_text_literal(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


def _refuse(node: exp.Expr, dataset: str, message: str) -> None:
    refuse("reject_mistyped_key_texts", "DATE_TEXT_MISTYPED", message, table=dataset, column=node.this.name)
