"""node_budget: the limit on a query's size held through the rewrites that copy parts of it.

``parse`` refuses a query of more than ``MAX_NODES`` parts, which is what bounds the guard's work (and the
engine's, and the auditor's, which keeps a cell's coverage and parses it at every later audit) by its input.
A rewrite that copies a part many times would multiply the tree past that limit after the fact: an alias named in
several clauses, a simple CASE's operand copied into each of its WHENs, a complement written as the IN of a
grant's long list of values. The WHENs of one CASE are siblings, so no depth limit holds their number, and a
30 KB query could become millions of parts. Each such rewrite therefore counts what it adds on the tree's
running count (kept in its ``meta``, so the next rewrite starts from it) and refuses past the limit before it
copies.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import refuse
from dsbroker.guard.internal_names import NODES_META
from dsbroker.guard.parse import MAX_NODES


def size(node: exp.Expr) -> int:
    """The number of parts of ``node``, itself included."""
    return sum(1 for _ in node.walk())


class NodeBudget:
    """The running count of ``query``'s parts for the rewrite ``rule``, which ``doing`` describes (how the query
    grows: "naming its outputs by alias or position")."""

    def __init__(self, query: exp.Expr, rule: str, doing: str) -> None:
        self._query, self._rule, self._doing = query, rule, doing
        self.nodes: int = query.meta.get(NODES_META) or size(query)
        self._sizes: dict[int, int] = {}

    def spend(self, nodes: int) -> None:
        """Count ``nodes`` more parts; refuses (QUERY_TOO_COMPLEX) past the limit."""
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            refuse(self._rule, "QUERY_TOO_COMPLEX", f"the query is too complex to check: {self._doing} makes it "
                   f"more than {MAX_NODES} parts")
        self._query.meta[NODES_META] = self.nodes

    def copy(self, node: exp.Expr) -> exp.Expr:
        """A copy of ``node``, counted (each node's size is counted once however often it is copied)."""
        self.spend(self._sizes.setdefault(id(node), size(node)))
        return node.copy()
