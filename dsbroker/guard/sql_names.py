"""sql_names: a construct named in a refusal as the caller wrote it in SQL, never by sqlglot's class name.

sqlglot parses ``a || b`` to ``DPipe`` and ``a // b`` to ``IntDiv``; a caller who is told ``DPipe is not allowed``
cannot tell what to change. Every refusal that names a construct asks here; a function is named as the query's
text spells it (``parse.written_name``).
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard.parse import written_name

# The SQL spelling of the constructs a query can hold that have no name of their own in sqlglot's classes,
# or a name that is not the SQL's.
_SPELLINGS: dict[type[exp.Expr], str] = {
    exp.DPipe: "||", exp.IntDiv: "//", exp.Mod: "%", exp.Pow: "**", exp.Dot: ".", exp.Bracket: "[]",
    exp.BitwiseAnd: "&", exp.BitwiseOr: "|", exp.BitwiseXor: "XOR", exp.BitwiseNot: "~",
    exp.BitwiseLeftShift: "<<", exp.BitwiseRightShift: ">>",
    exp.Like: "LIKE", exp.ILike: "ILIKE", exp.SimilarTo: "SIMILAR TO", exp.Glob: "GLOB", exp.RegexpLike: "REGEXP",
    exp.Is: "IS", exp.NullSafeEQ: "IS NOT DISTINCT FROM", exp.NullSafeNEQ: "IS DISTINCT FROM", exp.Xor: "XOR",
    exp.Escape: "ESCAPE", exp.Collate: "COLLATE", exp.Exists: "EXISTS", exp.Any: "ANY", exp.All: "ALL",
    exp.Interval: "INTERVAL", exp.Tuple: "a row of values (…)", exp.Array: "an array [...]", exp.Struct: "a struct",
    exp.Lambda: "a lambda (->)", exp.PropertyEQ: ":=", exp.Kwarg: "=>",
    exp.Cube: "CUBE", exp.Rollup: "ROLLUP", exp.GroupingSets: "GROUPING SETS", exp.Subquery: "a subquery",
    exp.With: "WITH", exp.CTE: "WITH", exp.Window: "OVER", exp.WindowSpec: "OVER", exp.Qualify: "QUALIFY",
    exp.Offset: "OFFSET", exp.Lateral: "LATERAL", exp.Placeholder: "a parameter", exp.Parameter: "a parameter",
    exp.Case: "CASE", exp.If: "IF", exp.Filter: "FILTER", exp.Union: "UNION", exp.Intersect: "INTERSECT",
    exp.Except: "EXCEPT", exp.Values: "VALUES", exp.TableSample: "TABLESAMPLE", exp.Unnest: "UNNEST",
    exp.Distinct: "DISTINCT", exp.Select: "SELECT", exp.Null: "NULL", exp.Boolean: "TRUE/FALSE",
    exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Neg: "-", exp.EQ: "=", exp.NEQ: "<>", exp.GT: ">",
    exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=", exp.In: "IN", exp.Between: "BETWEEN", exp.And: "AND", exp.Or: "OR",
    exp.Not: "NOT", exp.Paren: "(…)", exp.Cast: "CAST", exp.Column: "a column", exp.Literal: "a literal",
}


def sql_name(node: exp.Expr) -> str:
    """How ``node`` reads in SQL (``||``, ``LIKE``, ``UNPIVOT``, a function as written); for any other, its class
    name in capitals."""
    if isinstance(node, exp.Pivot):
        return "UNPIVOT" if node.args.get("unpivot") else "PIVOT"
    if isinstance(node, exp.Func) and type(node) not in _SPELLINGS:
        return written_name(node)
    if isinstance(node, exp.Not) and isinstance(node.this, exp.Like):
        return "NOT LIKE"
    for kind in type(node).__mro__:
        if kind in _SPELLINGS:
            return _SPELLINGS[kind]
    return type(node).__name__.upper()
