"""Money as people read it: fen (分) shown as 元 with thousands separators and two decimals, or as 万元.

Which result columns are money comes from the catalog: a column whose ``unit`` is ``fen``, summed or
averaged (or a linear form of such sums) in the query's select list. Integers in fen are exact; the
conversion goes through Decimal, never a float, so a sum of a billion fen prints every fen.
JSON output keeps the integers in fen.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from babel.numbers import format_decimal

FEN = "fen"
# 万元 to two decimals (hundreds of 元), as statistical reports print it, rounded half up (四舍五入); 元 is exact.
UNITS = {"yuan": (Decimal(100), "元"), "wan": (Decimal(1_000_000), "万元")}
CENTS = Decimal("0.01")


def money_text(fen, unit: str, locale: str) -> str:
    """``fen`` (int, Decimal or float) in ``unit`` (yuan or wan), grouped by thousands, without the unit's name."""
    divisor = UNITS[unit][0]
    amount = ((fen if isinstance(fen, Decimal) else Decimal(str(fen))) / divisor).quantize(CENTS, ROUND_HALF_UP)
    return format_decimal(amount, format="#,##0.00", locale=locale)


def unit_name(unit: str) -> str:
    """The name of ``unit`` as a column heading shows it: 元 or 万元."""
    return UNITS[unit][1]


def money_columns(sql: str, units_of) -> set[int]:
    """The indexes of the select list's money columns: those whose expression refers only to columns in fen
    (outside COUNT), through SUM or AVG or as is. ``units_of(table)`` gives a table's {column: unit}.

    An outer query over released cells (a CTE, a subquery) is read through to the columns it names where
    sqlglot's qualifier can resolve them; where it cannot, the column is not called money (shown as a number)."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError:
        return set()
    if not isinstance(tree, exp.Select):
        return set()
    units: dict[str, str] = {}
    # Each catalog read is an RPC the access log records: every table once, and a WITH's own names never.
    defined = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables = [table for table in tree.find_all(exp.Table) if table.db or table.name not in defined]
    names = dict.fromkeys(".".join(part for part in (table.db, table.name) if part) for table in tables)
    for name in names:
        for column, unit in units_of(name).items():
            units.setdefault(column, unit)
    aliases = _cte_money(tree, units)
    found = set()
    for index, expression in enumerate(tree.selects):
        if _is_money(expression, units, aliases):
            found.add(index)
    return found


def _cte_money(tree, units: dict[str, str]) -> set[str]:
    """Output names of CTEs and subqueries that are money, so an outer query's SUM(vat) over them is money."""
    from sqlglot import exp

    names = set()
    for select in tree.find_all(exp.Select):
        if select is tree:
            continue
        for expression in select.selects:
            if _is_money(expression, units, set()):
                names.add(expression.alias_or_name)
    return names


def _is_money(expression, units: dict[str, str], aliases: set[str]) -> bool:
    from sqlglot import exp

    if expression.find(exp.Count) is not None:
        return False
    columns = list(expression.find_all(exp.Column))
    if not columns:
        return False
    return all(units.get(c.name) == FEN or c.name in aliases for c in columns) \
        and all(isinstance(f, (exp.Sum, exp.Avg, exp.Alias, exp.Paren, exp.Add, exp.Sub, exp.Neg, exp.Mul,
                               exp.Column, exp.Identifier, exp.Literal, exp.Round, exp.Cast, exp.DataType))
                for f in expression.walk())
