"""The names of the guard's own columns and subqueries in the SQL it writes for the engine, and of the side
data its rules attach to a tree.

They are defined here and nowhere else. Every one starts with two underscores, a prefix no caller can
use: output aliases starting with it are refused (``expand_output_aliases``), and a policy may not name
a table or column with it (``dsbroker.policy.model``), so no caller expression can name, number or shadow one.
The engine's result is read by these names, never by position, and never leaves the sandbox.
"""

from __future__ import annotations

PREFIX = "__"

# Side data: what a rule leaves in a tree's ``meta`` for a later rule or for the guard's result. Never SQL.
# On a query that asked for totals (ROLLUP, CUBE, GROUPING SETS), which the rules see as a plain GROUP BY: its
# grouping sets, each the indices of the keys it groups by (dsbroker.guard.grouping_sets); and the form written.
TOTALS_META = "totals"
TOTALS_FORM_META = "totals_form"
NODES_META = "nodes"  # on the parsed tree: how many nodes it has
SOURCE_META = "source_sql"  # on the parsed tree: the text it was parsed from, for the names of functions as written
LINEAR_FORM_META = "linear_form"  # on an aggregate: the linear form of measures its argument stands for
CELL_PLAN_META = "cell_plan"  # on the cell query: the CellPlan the sandbox computes from released cells
RELEASED_FIRST_META = "released_first"  # on the encrypted order's first term: the threshold k it tests
NOISE_PLAN_META = "noise_plan"  # on the cell query of a noise policy: the NoisePlan
COVERAGE_META = "coverage"  # on the cell query: SELECT <its keys> FROM/JOIN/WHERE, what each cell covers

# The cell table the engine returns (split_cells): group keys, then statistics, then the threshold's count.
ENTITIES = "__entities"  # distinct entities per cell: the threshold's count
GROUPING = "__grouping"  # with totals: which keys a row totals over, as SQL's GROUPING() bitmask


def key(index: int) -> str:
    """The column holding group key ``index`` of the cell table."""
    return f"__k{index}"


def statistic(index: int) -> str:
    """The column holding statistic ``index`` of the cell table (a count, sum, minimum or maximum)."""
    return f"__s{index}"


def contributors(index: int) -> str:
    """Per cell: the entities whose total of summed measure ``index`` is set and not zero."""
    return f"__c{index}"


def negatives(index: int) -> str:
    """With totals, per cell: the entities with a negative amount of summed measure ``index`` in some part."""
    return f"__n{index}"


def dominance_total(index: int) -> str:
    """Per cell: the sum of every entity's contribution to measure ``index``, by magnitude."""
    return f"__d{index}_total"


def dominance_top(index: int) -> str:
    """Per cell: the sum of the n largest entity contributions to measure ``index`` (the (n, k) rule)."""
    return f"__d{index}_top"


def dominance_largest(index: int) -> str:
    """Per cell: the largest entity contribution to measure ``index`` (the p% rule)."""
    return f"__d{index}_largest"


def dominance_top_two(index: int) -> str:
    """Per cell: the sum of the two largest entity contributions to measure ``index`` (the p% rule)."""
    return f"__d{index}_top2"


# Outside DuckDB: a cell's largest contributions, sorted, as a table of one column, to add up the first n.
LARGEST = "__largest"  # the table
LARGEST_VALUE = "__v"  # its column

# Per cell and entity (the dominance rule's and the noise policy's first aggregation).
CELLS = "__cells"  # the subquery with one row per cell and entity
RANKED = "__ranked"  # noise: the same, with each entity's cells ranked
RANK = "__rank"
ENTITY = "__e"  # the entity of a row of __cells
ROWS = "__rows"  # its number of rows


def cell_key(index: int) -> str:
    """Group key ``index`` in the per-entity subquery."""
    return f"__g{index}"


def entity_sum(measure: str) -> str:
    """An entity's total of ``measure`` in one cell."""
    return f"__sum_{measure}"


def entity_count(measure: str) -> str:
    """An entity's number of rows with ``measure`` set, in one cell."""
    return f"__count_{measure}"


def entity_extreme(kind: str, measure: str) -> str:
    """An entity's MIN or MAX (``kind``) of ``measure`` in one cell."""
    return f"__{kind}_{measure}"


def noisy_quantity(index: int) -> str:
    """Noise: the exact, bounded per-cell sum ``index`` the sandbox adds noise to."""
    return f"__q{index}"


def is_internal(name: str) -> bool:
    """Whether ``name`` is reserved for the guard's own columns and tables."""
    return name.startswith(PREFIX)


# Two levels (split_levels): the tables of the in-memory engine the outer query runs on, and its marks.
def released_table(index: int) -> str:
    """The in-memory table holding the released cells of protected aggregate ``index`` of a two-level query."""
    return f"__cells{index}"


def lookup_table(index: int) -> str:
    """The in-memory table holding the granted columns of the ``index``-th lookup the outer query reads."""
    return f"__lookup{index}"


def withheld_mark(index: int) -> str:
    """Beside column ``index`` of a released table or of an outer query's output: whether its value is withheld
    (by disclosure control, or computed from a withheld cell)."""
    return f"__w{index}"
