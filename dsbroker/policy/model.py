"""Grants as policy files: the model, and a loader whose errors name the file and line.

A policy (grant) says which department may ask what of which dataset: the
level of each column, the aggregates allowed, the row filter bound to the
caller, the disclosure threshold and the validity period. Deny by default: a
column the policy does not list is hidden.

Settings this version cannot enforce are refused rather than accepted and ignored, so that an owner
never believes a protection is on when it is not. Approvals
(signatures) are checked by :mod:`dsbroker.policy.signing`; the sandbox runs
nothing under a policy whose approvals do not verify.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
import sqlglot.expressions as exp
import yaml

from dsbroker.errors import GrantError, PolicyFileError, shown
from dsbroker.policy.products import Product, read_products


@dataclass(frozen=True)
class Dominance:
    """When a SUM cell is too much one taxpayer's: the (n, k) rule, the p% rule, or both.

    (n, k): the n largest contributors (by entity) hold more than k% of the cell's total.
    p%: the cell's total less its two largest contributors is under p% of the largest, so the
    second largest could estimate the largest to within p%. Contributions count by magnitude,
    so refunds (negative amounts) cannot hide a dominant taxpayer.
    """

    n: int | None = None
    k: float | None = None
    p: float | None = None


@dataclass(frozen=True)
class Noise:
    """Differentially private answers: OpenDP noise, contributions bounded, a budget that runs out.

    Each query that runs spends ``epsilon`` of the grant's ``budget`` (an identical repeat returns the
    stored answer and spends nothing); once spent, queries are refused. The budget is the grant's share
    of its dataset's, which every noise grant on the dataset spends and the sandbox keeps (the owner's
    ``noise_budgets``): a grant cannot leave it, and its queries are refused too once the dataset's is
    spent, whatever its share has left. ``delta`` bounds the chance
    that a cell of a single taxpayer passes the noisy threshold. A taxpayer contributes to at most
    ``groups_per_entity`` cells of one result, with at most ``rows_per_entity`` rows to each, and its
    total of a measure in a cell is clipped to ``bounds[measure]``: these fix each answer's
    sensitivity, so the noise scale depends on the policy, never on the data.
    """

    epsilon: float
    budget: float
    bounds: dict[str, tuple[int, int]]
    delta: float = 1e-6
    groups_per_entity: int = 1
    rows_per_entity: int = 1

    def magnitude(self, measure: str) -> int:
        """The largest change one taxpayer's clipped total of ``measure`` can make to one cell."""
        low, high = self.bounds[measure]
        return max(abs(low), abs(high))


@dataclass(frozen=True)
class Lookup:
    """A non-sensitive table (street or industry names) a query may join on its key.

    The key is the lookup's column that ``joins`` the dataset's column of that name (the key's own name
    unless the grant says ``joins: <dataset column>``), at group or filter level; the lookup's columns
    take that level, since they say no more than the key does. The key must be unique in the lookup
    table (one row per code), or a join would repeat rows.
    """

    table: str
    key: str
    columns: tuple[str, ...]
    joins: str = ""  # the dataset's column the key matches; the key's own name where empty

    def __post_init__(self) -> None:
        if not self.joins:  # one spelling of the same lookup, so two loaded grants compare equal
            object.__setattr__(self, "joins", self.key)

    @property
    def name(self) -> str:
        """The table's name without its schema: how the guard qualifies the lookup's columns."""
        return self.table.split(".")[1]


class ColumnLevel(str, enum.Enum):
    """How a column may be used in a query (DESIGN section 5)."""

    HIDDEN = "hidden"
    ENTITY = "entity"
    GROUP = "group"
    FILTER = "filter"
    MEASURE = "measure"


AGGREGATES = ("COUNT", "SUM", "AVG")
DEFAULT_AGGREGATES = AGGREGATES
EXTREMES = ("MIN", "MAX")  # granted per measure column (``min_max``): each names one entity's value
PRINCIPAL_PARAMETERS = ("district", "department")
DEFAULT_MIN_ENTITIES = 10
# The dominance rule a grant gets when it says nothing: a SUM or AVG cell is withheld when its two largest
# taxpayers hold over 85% of it. A threshold of ten taxpayers does not protect a cell that one firm makes up,
# so the rule is on unless the owner turns it off, in writing (``dominance: off`` with a reason).
DEFAULT_DOMINANCE = Dominance(n=2, k=85.0)
DOMINANCE_OFF_REASON = "dominance_off_reason"  # the key under ``disclosure`` that says why the rule is off
LOWEST_MIN_ENTITIES = 2
DEFAULT_MAX_GROUPS = 10_000
# A policy document is a page of YAML (the demo's grant is about 1.5 KB); this bound, on every document
# read (a file, an approval, a plan's), keeps one from costing the broker or the sandbox more than a page.
MAX_POLICY_CHARS = 64 * 1024
# A column's listed values (``values``): a code list, not a table; each becomes a literal of an IN list.
MAX_VALUES = 1000
MAX_VALUE_CHARS = 100

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_DATASET = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")
# The guard's own columns in the SQL it writes start with this (dsbroker.guard.internal_names.PREFIX):
# no table or column of a policy may, so no caller can name one.
RESERVED_PREFIX = "__"
_REQUEST = re.compile(r"^req-[a-z0-9]{4,40}$")
_NARROWS = re.compile(r"^sha256:[0-9a-f]{64}$")

# Keys this version accepts, per section. A key outside these is a lint error.
_TOP_KEYS = {"id", "version", "grantee", "purpose", "dataset", "columns", "aggregates", "min_max", "lookups", "ranges",
             "values", "products", "queries",
             "row_filter", "disclosure", "limits", "results", "partitions", "approvals", "request", "narrows"}
_LOOKUP_KEYS = {"key", "joins", "columns"}
_GRANTEE_KEYS = {"department", "district"}
# A district code as tokens carry it (GB/T 2260, e.g. "320102"): quoted text, since YAML would read
# a bare 010101 as a number and drop its zeros.
_DISTRICT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")
_DISCLOSURE_KEYS = {"min_entities", "dominance", DOMINANCE_OFF_REASON, "p_percent", "noise", "suppressed"}
SUPPRESSION_MODES = ("mark", "drop")  # what happens to a cell that fails the threshold
_DOMINANCE_KEYS = {"n", "k"}
_NOISE_KEYS = {"epsilon", "budget", "delta", "bounds", "groups_per_entity", "rows_per_entity"}
_LIMITS_KEYS = {"valid_from", "valid_until", "max_groups", "queries_per_day", "queries_total"}
# What a grantee may send: SQL of its own or a product ("any", the default), or the grant's products only.
QUERY_KINDS = ("any", "products")
RESULT_MODES = ("aggregate", "encrypted")  # plaintext cells, or cells only the requester can decrypt
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

@dataclass(frozen=True)
class Policy:
    """One grant, as loaded from a policy file."""

    id: str
    version: int
    department: str
    purpose: str
    dataset: str
    columns: dict[str, ColumnLevel]
    aggregates: tuple[str, ...]
    row_filter: str | None
    min_entities: int
    max_groups: int
    valid_from: dt.date | None
    valid_until: dt.date | None
    results: tuple[str, ...]
    # Sandboxes that each hold a partition of the dataset (one per district tax office, say): a query
    # runs in every one and the broker adds their encrypted cells. Empty: the dataset lives in one sandbox.
    partitions: tuple[str, ...] = ()
    queries_per_day: int | None = None
    queries_total: int | None = None
    min_max: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dominance: Dominance | None = None
    # Why the owner turned the dominance rule off (``dominance: off``); None when it is on, or when the grant
    # has nothing it applies to (no SUM or AVG of a measure, or noise). Lint shows it to whoever signs.
    dominance_waiver: str | None = None
    noise: Noise | None = None
    # "mark": a cell under the threshold is sent as a withheld (null, marked) cell; "drop": its row is left out.
    suppression: str = "mark"
    lookups: dict[str, Lookup] = field(default_factory=dict)
    # Measures a query may filter on, in ranges whose ends snap outward to the measure's grid.
    ranges: dict[str, int] = field(default_factory=dict)
    # Group and filter columns whose every value the owner lists (a code list): on these a query may write
    # ``<>`` and ``NOT IN``, which the guard rewrites to the IN list of the other values (expand_complements).
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The owner's data products: standing queries the grantee runs by name (dsbroker.policy.products).
    products: dict[str, Product] = field(default_factory=dict)
    # ``queries: products``: the grantee runs the grant's products only, never SQL of its own (checked by the
    # broker and again by the sandbox, which takes the text from the signed policy).
    products_only: bool = False
    request: str | None = None
    narrows: str | None = None
    # The grantee's district: a token of the grantee department that names another is refused, at the
    # broker and at the sandbox. None only in policies written before it existed; no query runs under
    # those (GRANT_DISTRICT_MISSING) and lint flags them.
    district: str | None = None
    source: str = field(default="", compare=False)
    sha256: str = field(default="", compare=False)
    document: str = field(default="", compare=False, repr=False)

    @property
    def entity_column(self) -> str:
        """The privacy unit (e.g. the taxpayer id) counted by the threshold."""
        return next(name for name, level in self.columns.items() if level is ColumnLevel.ENTITY)

    def level_of(self, column: str) -> ColumnLevel:
        """The column's level; columns the policy does not list are hidden."""
        return self.columns.get(column, ColumnLevel.HIDDEN)

    def visible_columns(self) -> dict[str, ColumnLevel]:
        """Every column a query may name, with its level: the dataset's by name, each lookup's as
        ``<lookup table name>.<column>`` (its key included) at the level of its key."""
        visible = dict(self.columns)
        for lookup in self.lookups.values():
            for column in (lookup.key, *lookup.columns):
                visible[f"{lookup.name}.{column}"] = self.columns[lookup.joins]
        return visible

    def is_valid_on(self, day: dt.date) -> bool:
        """Whether ``day`` lies within the grant's validity period."""
        return (self.valid_from is None or day >= self.valid_from) and (
            self.valid_until is None or day <= self.valid_until
        )


def is_policy_id(text: str) -> bool:
    """Whether ``text`` can name a policy (grant): 2 to 63 lower-case letters, digits and dashes."""
    return bool(_ID.fullmatch(text))


def load_policy(path: str | Path) -> Policy:
    """Load and validate one policy file; raises :class:`PolicyFileError` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyFileError(f"cannot read policy file ({error.__class__.__name__})", path=str(path)) from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Parse and validate a policy from YAML text; errors name ``source`` and the line."""
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyFileError(f"a policy is at most {MAX_POLICY_CHARS} characters", path=source, line=1)
    try:
        root = yaml.compose(text, Loader=_PolicyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise PolicyFileError(f"not valid YAML: {getattr(error, 'problem', 'syntax error')}",
                              path=source, line=mark.line + 1 if mark else None) from None
    if not isinstance(root, yaml.MappingNode):
        raise PolicyFileError("a policy is a mapping of keys to values", path=source, line=1)
    reader = _Reader(source, root)
    policy = reader.policy()
    return Policy(**policy, source=source, sha256=hashlib.sha256(text.encode()).hexdigest(), document=text)


def read_offered_products(source: str, node: yaml.Node) -> dict[str, Product]:
    """Products as a policy's ``products:`` section holds them, read from ``node`` (a mapping of names to
    products) of another YAML file: the owner's catalog offers them to requests. Errors (PolicyFileError) name
    ``source`` and the line."""
    return read_products(_Reader(source, node), node)  # type: ignore[arg-type]


def parse_products(text: str, *, source: str = "<products>") -> dict[str, Product]:
    """The products of a YAML text ``products: {...}`` (as :func:`dsbroker.policy.products.render_products`
    writes it); PolicyFileError naming ``source`` and the line."""
    try:
        root = yaml.compose(text, Loader=_PolicyLoader)
    except yaml.YAMLError:
        raise PolicyFileError("not valid YAML", path=source, line=None) from None
    if not isinstance(root, yaml.MappingNode) or [key.value for key, _ in root.value] != ["products"]:
        raise PolicyFileError("a products section is one mapping, products:", path=source, line=1)
    return read_offered_products(source, root.value[0][1])


def load_policies(directory: str | Path) -> dict[str, Policy]:
    """Load every ``*.yaml`` policy in ``directory``, keyed by id; duplicate ids are an error."""
    policies: dict[str, Policy] = {}
    for path in sorted(Path(directory).glob("*.y*ml")):
        policy = load_policy(path)
        if policy.id in policies:
            raise PolicyFileError(f"policy id {policy.id!r} is also used by {policies[policy.id].source}",
                                  path=str(path), line=1)
        policies[policy.id] = policy
    return policies


def sums_measures(aggregates: tuple[str, ...], columns: dict[str, ColumnLevel]) -> bool:
    """Whether a grant lets a query ask for a SUM or AVG of a measure: what the default dominance rule is for."""
    return bool({"SUM", "AVG"} & set(aggregates)) and ColumnLevel.MEASURE in columns.values()


def check_grantee_district(policy: Policy, district: str) -> None:
    """The caller's district must be the one the grant names (the broker's and the sandbox's check).

    The row filter binds to the caller's district, so without this a token of the grantee department
    that claims another district would read that district's rows.
    """
    if policy.district is None:
        raise GrantError(f"grant {policy.id!r} names no grantee district, so no query runs under it; its owner "
                         "re-issues it with grantee.district", reason="GRANT_DISTRICT_MISSING",
                         grant=policy.id)
    if district != policy.district:
        raise GrantError(f"grant {policy.id!r} is for district {policy.district}, not the district the token names",
                         reason="GRANT_DISTRICT_MISMATCH", grant=policy.id)


def bind_row_filter(row_filter: str, *, district: str, department: str) -> exp.Expr:
    """Parse a policy's row filter and bind the caller's attributes to its placeholders."""
    tree = _parsed_row_filter(row_filter).copy()
    values = {"district": district, "department": department}
    for placeholder in list(tree.find_all(exp.Placeholder)):
        placeholder.replace(exp.Literal.string(values[placeholder.name]))
    return tree


@functools.lru_cache(maxsize=256)
def _parsed_row_filter(row_filter: str) -> exp.Expr:
    # Parsed once per text; callers bind a copy.
    return sqlglot.parse_one(row_filter, read="duckdb")


class _PolicyLoader(yaml.SafeLoader):
    """The safe loader without anchors and aliases. A policy needs neither, and an alias makes one node
    stand for many: nested, a few hundred bytes stand for billions of values (a "billion laughs"), which a
    document a hostile broker puts in a plan could make the sandbox walk before anything refused it."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "anchors and aliases are not allowed in a policy",
                                              event.start_mark)
        return super().compose_node(parent, index)


class _Reader:
    """Walks the YAML node tree, validating as it goes, so each error has a line."""

    def __init__(self, source: str, root: yaml.MappingNode) -> None:
        self.source = source
        self.root = root

    def fail(self, node: yaml.Node, message: str) -> PolicyFileError:
        return PolicyFileError(message, path=self.source, line=node.start_mark.line + 1)

    def mapping(self, node: yaml.Node, path: tuple[str, ...], allowed: set[str] | None) -> dict[str, yaml.Node]:
        where = ".".join(path) or "the policy"
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping")
        items: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in items:
                raise self.fail(key_node, f"duplicate key {shown('.'.join((*path, key)))}")
            if allowed is not None and key not in allowed:
                raise self.fail(key_node, f"unknown key {shown('.'.join((*path, key)))} "
                                          f"(allowed: {', '.join(sorted(allowed))})")
            items[key] = value_node
        return items

    def scalar(self, node: yaml.Node, name: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{name} must be a single value")
        return _construct(node)

    def text(self, node: yaml.Node, name: str, pattern: re.Pattern | None = None) -> str:
        value = self.scalar(node, name)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(node, f"{name} must be non-empty text")
        if pattern is not None and not pattern.match(value):
            raise self.fail(node, f"{name} {shown(value)} is not of the form {pattern.pattern}")
        if pattern in (_DATASET, _COLUMN):
            self.reserved(node, name, value)
        return value

    def reserved(self, node: yaml.Node, name: str, value: str) -> None:
        """Refuse a table or column name the guard keeps for its own columns (dsbroker.guard.internal_names)."""
        if any(part.startswith(RESERVED_PREFIX) for part in str(value).split(".")):
            raise self.fail(node, f"{name} {shown(value)}: names starting with {RESERVED_PREFIX!r} are reserved for "
                                  "the guard's own columns")

    def integer(self, node: yaml.Node, name: str, lowest: int) -> int:
        value = self.scalar(node, name)
        # At most a signed 64-bit integer: what every store and ledger keeps (SQLite's INTEGER, PostgreSQL's BIGINT).
        if not isinstance(value, int) or isinstance(value, bool) or not lowest <= value < 2 ** 63:
            raise self.fail(node, f"{name} must be a whole number of at least {lowest} (and below 2^63)")
        return value

    def date(self, node: yaml.Node, name: str) -> dt.date:
        value = self.scalar(node, name)
        if not isinstance(value, dt.date):
            raise self.fail(node, f"{name} must be a date (YYYY-MM-DD)")
        return value

    def names(self, node: yaml.Node, name: str, allowed: set[str] | tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{name} must be a list")
        values = []
        for item in node.value:
            value = str(self.scalar(item, name))
            normalised = value.upper() if name in ("aggregates", "min_max") or name.startswith("min_max.") else value
            if name == "aggregates" and normalised in EXTREMES:
                raise self.fail(item, f"aggregates: {normalised} is granted per measure column; list the columns "
                                      f"under min_max, e.g. min_max: {{employees: [{normalised}]}}")
            if normalised not in allowed:
                raise self.fail(item, f"{name}: unknown value {shown(value)} (allowed: {', '.join(sorted(allowed))})")
            if normalised in values:
                raise self.fail(item, f"{name}: {shown(value)} is listed twice")
            values.append(normalised)
        return tuple(values)

    def policy(self) -> dict[str, Any]:
        top = self.mapping(self.root, (), _TOP_KEYS)
        for required in ("id", "version", "grantee", "purpose", "dataset", "columns"):
            if required not in top:
                raise self.fail(self.root, f"missing required key {required!r}")
        grantee = self.mapping(top["grantee"], ("grantee",), _GRANTEE_KEYS)
        if "approvals" in top and not isinstance(top["approvals"], yaml.SequenceNode):
            raise self.fail(top["approvals"], "approvals must be a list (written by 'dsbroker policy sign')")
        if "department" not in grantee:
            raise self.fail(top["grantee"], "missing required key 'grantee.department'")
        columns = self.columns(top["columns"])
        disclosure = self.mapping(top["disclosure"], ("disclosure",), _DISCLOSURE_KEYS) if "disclosure" in top else {}
        limits = self.mapping(top["limits"], ("limits",), _LIMITS_KEYS) if "limits" in top else {}
        valid_from = self.date(limits["valid_from"], "limits.valid_from") if "valid_from" in limits else None
        valid_until = self.date(limits["valid_until"], "limits.valid_until") if "valid_until" in limits else None
        results = self.names(top["results"], "results", RESULT_MODES) if "results" in top else ("aggregate",)
        partitions = self.partitions(top["partitions"], results, disclosure) if "partitions" in top else ()
        if valid_from and valid_until and valid_until < valid_from:
            raise self.fail(limits["valid_until"], "limits.valid_until is before limits.valid_from")
        return {
            "id": self.text(top["id"], "id", _ID),
            "version": self.integer(top["version"], "version", 1),
            "department": self.text(grantee["department"], "grantee.department", _ID),
            "district": self.district(grantee["district"]) if "district" in grantee else None,
            "purpose": self.text(top["purpose"], "purpose"),
            "dataset": self.text(top["dataset"], "dataset", _DATASET),
            "columns": columns,
            "aggregates": self.names(top["aggregates"], "aggregates", AGGREGATES)
            if "aggregates" in top else DEFAULT_AGGREGATES,
            "min_max": self.min_max(top["min_max"], columns) if "min_max" in top else {},
            **self.dominance(disclosure, columns, top, results),
            "noise": self.noise(disclosure, columns, top),
            "suppression": self.choice(disclosure["suppressed"], "disclosure.suppressed", SUPPRESSION_MODES)
            if "suppressed" in disclosure else "mark",
            "lookups": self.lookups(top["lookups"], top["dataset"], columns) if "lookups" in top else {},
            "ranges": self.ranges(top["ranges"], columns) if "ranges" in top else {},
            "values": self.values(top["values"], columns) if "values" in top else {},
            "products": read_products(self, top["products"]) if "products" in top else {},
            "products_only": self.products_only(top),
            "row_filter": self.row_filter(top["row_filter"], columns) if "row_filter" in top else None,
            "min_entities": self.integer(disclosure["min_entities"], "disclosure.min_entities", LOWEST_MIN_ENTITIES)
            if "min_entities" in disclosure else DEFAULT_MIN_ENTITIES,
            "max_groups": self.integer(limits["max_groups"], "limits.max_groups", 1)
            if "max_groups" in limits else DEFAULT_MAX_GROUPS,
            "queries_per_day": self.integer(limits["queries_per_day"], "limits.queries_per_day", 1)
            if "queries_per_day" in limits else None,
            "queries_total": self.integer(limits["queries_total"], "limits.queries_total", 1)
            if "queries_total" in limits else None,
            "valid_from": valid_from,
            "valid_until": valid_until,
            "results": results,
            "partitions": partitions,
            "request": self.text(top["request"], "request", _REQUEST) if "request" in top else None,
            "narrows": self.text(top["narrows"], "narrows", _NARROWS) if "narrows" in top else None,
        }

    def products_only(self, top: dict[str, yaml.Node]) -> bool:
        if "queries" not in top:
            return False
        only = self.choice(top["queries"], "queries", QUERY_KINDS) == "products"
        if only and "products" not in top:
            raise self.fail(top["queries"], "queries: products needs products: the grant would answer nothing")
        return only

    def district(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.ScalarNode) and not isinstance(_construct(node), str):
            raise self.fail(node, 'grantee.district must be quoted text, e.g. district: "320102" (a bare number '
                                  "loses its leading zeros)")
        return self.text(node, "grantee.district", _DISTRICT)

    def columns(self, node: yaml.Node) -> dict[str, ColumnLevel]:
        items = self.mapping(node, ("columns",), None)
        levels = {level.value for level in ColumnLevel}
        columns: dict[str, ColumnLevel] = {}
        for name, value_node in items.items():
            if not _COLUMN.match(str(name)):
                raise self.fail(value_node, f"columns: {shown(name)} is not a column name")
            self.reserved(value_node, "columns", name)
            level = self.scalar(value_node, f"columns.{name}")
            if level not in levels:
                raise self.fail(value_node, f"columns.{name}: unknown level {shown(level)} "
                                            f"(allowed: {', '.join(sorted(levels))})")
            columns[name] = ColumnLevel(level)
        entities = [name for name, level in columns.items() if level is ColumnLevel.ENTITY]
        if len(entities) != 1:
            raise self.fail(node, "columns: exactly one column must be the entity (the privacy unit); "
                                  f"found {len(entities)}")
        return columns

    def percent(self, node: yaml.Node, name: str) -> float:
        value = self.scalar(node, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 100:
            raise self.fail(node, f"{name} must be a percentage above 0 and below 100")
        return float(value)

    def dominance(self, disclosure: dict[str, yaml.Node], columns: dict[str, ColumnLevel],
                  top: dict[str, yaml.Node], results: tuple[str, ...]) -> dict[str, Any]:
        """The grant's dominance rule and the owner's waiver of it (``dominance: off``, with a reason)."""
        if "noise" in disclosure:
            # Under noise each taxpayer's total is clipped to the grant's bounds, which already bounds what one
            # taxpayer adds to a cell: a noise grant has no dominance rule, by default or written (self.noise
            # refuses one written beside it).
            return {"dominance": None, "dominance_waiver": None}
        waiver = self.dominance_waiver(disclosure)
        if waiver is not None:
            return {"dominance": None, "dominance_waiver": waiver}
        aggregates = self.names(top["aggregates"], "aggregates", AGGREGATES) if "aggregates" in top \
            else DEFAULT_AGGREGATES
        dominance = self.dominance_rule(disclosure, sums_measures(aggregates, columns))
        if dominance is not None and "encrypted" in results:
            raise self.fail(top["results"], self.encrypted_under_dominance(disclosure))
        return {"dominance": dominance, "dominance_waiver": None}

    def dominance_rule(self, disclosure: dict[str, yaml.Node], by_default: bool) -> Dominance | None:
        """The (n, k) rule the grant writes, else the default when ``by_default``; the p% rule where written."""
        n, k, p = (DEFAULT_DOMINANCE.n, DEFAULT_DOMINANCE.k, None) if by_default else (None, None, None)
        if "dominance" in disclosure:
            rule = self.mapping(disclosure["dominance"], ("disclosure", "dominance"), _DOMINANCE_KEYS)
            for required in ("n", "k"):
                if required not in rule:
                    raise self.fail(disclosure["dominance"], f"missing required key 'disclosure.dominance.{required}'")
            n = self.integer(rule["n"], "disclosure.dominance.n", 1)
            k = self.percent(rule["k"], "disclosure.dominance.k")
        if "p_percent" in disclosure:
            p = self.percent(disclosure["p_percent"], "disclosure.p_percent")
        return Dominance(n, k, p) if n is not None or p is not None else None

    def dominance_waiver(self, disclosure: dict[str, yaml.Node]) -> str | None:
        """The owner's reason for ``dominance: off``; None when the rule is not turned off.

        PyYAML reads a bare ``off`` as the boolean false, so that and the text "off" turn the rule off;
        any other single value is refused rather than read as on or off."""
        node, reason = disclosure.get("dominance"), disclosure.get(DOMINANCE_OFF_REASON)
        if not isinstance(node, yaml.ScalarNode):  # absent, or the rule as a mapping
            if reason is not None:
                raise self.fail(reason, f"disclosure.{DOMINANCE_OFF_REASON} goes with dominance: off only")
            return None
        value = _construct(node)
        if value is not False and value != "off":  # not ``in (False, "off")``: 0 == False
            raise self.fail(node, "disclosure.dominance must be the rule, e.g. {n: 2, k: 85}, or off (with "
                                  f"disclosure.{DOMINANCE_OFF_REASON} saying why)")
        if reason is None:
            raise self.fail(node, f"dominance: off needs disclosure.{DOMINANCE_OFF_REASON}: say why this grant's sums "
                                  "may be released when one or two taxpayers make up a cell (the reviewer and the "
                                  "owner read it before they sign)")
        if "p_percent" in disclosure:
            raise self.fail(disclosure["p_percent"], "disclosure.p_percent is a dominance rule; it cannot be on with "
                                                     "dominance: off")
        return self.text(reason, f"disclosure.{DOMINANCE_OFF_REASON}").strip()

    @staticmethod
    def encrypted_under_dominance(disclosure: dict[str, yaml.Node]) -> str:
        """Why an encrypted grant needs the dominance rule off, and how the owner says so."""
        which = "its dominance rule" if "dominance" in disclosure or "p_percent" in disclosure else \
            "the dominance rule (on by default for SUM and AVG)"
        return (f"results: encrypted cannot be served under {which}: the sandbox cannot withhold a dominated cell "
                "of an encrypted result. To grant encrypted results, turn the rule off and say why, e.g. "
                f'disclosure: {{dominance: off, {DOMINANCE_OFF_REASON}: "..."}}; or grant results: [aggregate] '
                "only")

    def noise(self, disclosure: dict[str, yaml.Node], columns: dict[str, ColumnLevel],
              top: dict[str, yaml.Node]) -> Noise | None:
        if "noise" not in disclosure:
            return None
        node = disclosure["noise"]
        for other in ("dominance", "p_percent", DOMINANCE_OFF_REASON):
            if other in disclosure:
                raise self.fail(disclosure[other], f"disclosure.{other} and disclosure.noise are alternatives: a "
                                                   "noise grant has no dominance rule to set or turn off, since "
                                                   "clipping each taxpayer's total already bounds what one adds")
        if "min_max" in top:
            raise self.fail(top["min_max"], "min_max is not allowed with disclosure.noise: a noisy MIN or MAX "
                                            "still names one taxpayer's value")
        items = self.mapping(node, ("disclosure", "noise"), _NOISE_KEYS)
        for required in ("epsilon", "budget", "bounds"):
            if required not in items:
                raise self.fail(node, f"missing required key 'disclosure.noise.{required}'")
        epsilon = self.positive(items["epsilon"], "disclosure.noise.epsilon")
        budget = self.positive(items["budget"], "disclosure.noise.budget")
        if budget < epsilon:
            raise self.fail(items["budget"], "disclosure.noise.budget is less than one query's epsilon")
        delta = self.positive(items["delta"], "disclosure.noise.delta") if "delta" in items else 1e-6
        if delta >= 1e-3:
            raise self.fail(items["delta"], "disclosure.noise.delta must be below 0.001 (it is the chance that a "
                                            "cell of one taxpayer is released)")
        bounds = self.noise_bounds(items["bounds"], columns)
        return Noise(epsilon, budget, bounds, delta,
                     self.integer(items["groups_per_entity"], "disclosure.noise.groups_per_entity", 1)
                     if "groups_per_entity" in items else 1,
                     self.integer(items["rows_per_entity"], "disclosure.noise.rows_per_entity", 1)
                     if "rows_per_entity" in items else 1)

    def noise_bounds(self, node: yaml.Node, columns: dict[str, ColumnLevel]) -> dict[str, tuple[int, int]]:
        """Each measure's clipping bounds, two whole numbers low < high."""
        bounds: dict[str, tuple[int, int]] = {}
        for name, bound_node in self.mapping(node, ("disclosure", "noise", "bounds"), None).items():
            if columns.get(name) is not ColumnLevel.MEASURE:
                raise self.fail(bound_node, f"disclosure.noise.bounds: {shown(name)} is not a measure column of this "
                                            "policy")
            if not isinstance(bound_node, yaml.SequenceNode) or len(bound_node.value) != 2:
                raise self.fail(bound_node, f"disclosure.noise.bounds.{name} must be [low, high]")
            low, high = (self.scalar(item, f"disclosure.noise.bounds.{name}") for item in bound_node.value)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) or low >= high:
                raise self.fail(bound_node, f"disclosure.noise.bounds.{name} must be two whole numbers, low < high "
                                            "(in the column's unit, e.g. fen)")
            bounds[name] = (low, high)
        return bounds

    def partitions(self, node: yaml.Node, results: tuple[str, ...],
                   disclosure: dict[str, yaml.Node]) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode) or len(node.value) < 2:
            raise self.fail(node, "partitions must list two or more sandbox ids (each sandbox's sandbox_id)")
        if results != ("encrypted",):
            raise self.fail(node, "partitions need results: [encrypted]: the broker adds the partitions' cells "
                                  "under encryption, so that nobody sees a partition's own cells")
        if "noise" in disclosure:
            raise self.fail(disclosure["noise"], "disclosure.noise is not served with partitions by this version")
        ids = []
        for item in node.value:
            sandbox_id = self.text(item, "partitions", _SANDBOX_ID)
            if sandbox_id in ids:
                raise self.fail(item, f"partitions: {shown(sandbox_id)} is listed twice")
            ids.append(sandbox_id)
        return tuple(ids)

    def choice(self, node: yaml.Node, name: str, allowed: tuple[str, ...]) -> str:
        value: str = self.scalar(node, name)
        if value not in allowed:
            raise self.fail(node, f"{name}: unknown value {shown(value)} (allowed: {', '.join(allowed)})")
        return value

    def positive(self, node: yaml.Node, name: str) -> float:
        value = self.scalar(node, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise self.fail(node, f"{name} must be a number above 0")
        return float(value)

    def ranges(self, node: yaml.Node, columns: dict[str, ColumnLevel]) -> dict[str, int]:
        grids: dict[str, int] = {}
        for name, value_node in self.mapping(node, ("ranges",), None).items():
            if columns.get(name) is not ColumnLevel.MEASURE:
                raise self.fail(value_node, f"ranges: {shown(name)} is not a measure column of this policy")
            grids[name] = self.integer(value_node, f"ranges.{name} (the grid, in the column's unit)", 1)
        return grids

    def values(self, node: yaml.Node, columns: dict[str, ColumnLevel]) -> dict[str, tuple[str, ...]]:
        """Each listed column's values: text (quoted, so YAML keeps a code's zeros), unique, at most MAX_VALUES."""
        listed: dict[str, tuple[str, ...]] = {}
        for name, value_node in self.mapping(node, ("values",), None).items():
            if columns.get(name) not in (ColumnLevel.GROUP, ColumnLevel.FILTER):
                raise self.fail(value_node, f"values: {shown(name)} is not a group or filter column of this policy")
            if not isinstance(value_node, yaml.SequenceNode) or not 0 < len(value_node.value) <= MAX_VALUES:
                raise self.fail(value_node, f"values.{name} must be a list of 1 to {MAX_VALUES} values")
            values: list[str] = []
            for item in value_node.value:
                value = self.scalar(item, f"values.{name}")
                if not isinstance(value, str) or not value or len(value) > MAX_VALUE_CHARS:
                    raise self.fail(item, f"values.{name}: each value is quoted text of 1 to {MAX_VALUE_CHARS} "
                                          "characters (YAML reads 039 unquoted as the number 39)")
                if value in values:
                    raise self.fail(item, f"values.{name}: {shown(value)} is listed twice")
                values.append(value)
            listed[name] = tuple(values)
        return listed

    def min_max(self, node: yaml.Node, columns: dict[str, ColumnLevel]) -> dict[str, tuple[str, ...]]:
        granted: dict[str, tuple[str, ...]] = {}
        for name, value_node in self.mapping(node, ("min_max",), None).items():
            if columns.get(name) is not ColumnLevel.MEASURE:
                raise self.fail(value_node, f"min_max: {shown(name)} is not a measure column of this policy")
            granted[name] = self.names(value_node, f"min_max.{name}", EXTREMES)
        return granted

    def lookups(self, node: yaml.Node, dataset_node: yaml.Node, columns: dict[str, ColumnLevel]) -> dict[str, Lookup]:
        dataset = self.text(dataset_node, "dataset", _DATASET)
        lookups: dict[str, Lookup] = {}
        names = {dataset.split(".")[1]}
        for table, value_node in self.mapping(node, ("lookups",), None).items():
            if not _DATASET.match(str(table)):
                raise self.fail(value_node, f"lookups: {shown(table)} is not of the form schema.table")
            self.reserved(value_node, "lookups", table)
            items = self.mapping(value_node, ("lookups", table), _LOOKUP_KEYS)
            for required in ("key", "columns"):
                if required not in items:
                    raise self.fail(value_node, f"missing required key 'lookups.{table}.{required}'")
            key = self.text(items["key"], f"lookups.{table}.key", _COLUMN)
            # ``joins`` names the dataset's column where the lookup's key has another name (code = industry_code).
            joined = "joins" if "joins" in items else "key"
            joins = self.text(items[joined], f"lookups.{table}.{joined}", _COLUMN)
            if columns.get(joins) not in (ColumnLevel.GROUP, ColumnLevel.FILTER):
                raise self.fail(items[joined], f"lookups.{table}.{joined}: {shown(joins)} must be a group or filter "
                                               "column of this policy (the lookup's columns take its level)")
            if not isinstance(items["columns"], yaml.SequenceNode) or not items["columns"].value:
                raise self.fail(items["columns"], f"lookups.{table}.columns must be a non-empty list")
            listed = []
            for item in items["columns"].value:
                column = self.text(item, f"lookups.{table}.columns", _COLUMN)
                if column in listed or column == key:
                    raise self.fail(item, f"lookups.{table}.columns: {shown(column)} is listed twice or is the key")
                listed.append(column)
            lookup = Lookup(table, key, tuple(listed), joins)
            if lookup.name in names:
                raise self.fail(value_node, f"lookups: {shown(table)} has the same table name as the dataset or "
                                            "another lookup; the guard tells them apart by that name")
            names.add(lookup.name)
            lookups[table] = lookup
        return lookups

    def row_filter(self, node: yaml.Node, columns: dict[str, ColumnLevel]) -> str:
        text = self.text(node, "row_filter")
        try:
            tree = sqlglot.parse_one(text, read="duckdb")
        except sqlglot.errors.SqlglotError:
            raise self.fail(node, "row_filter does not parse as a SQL condition") from None
        if not isinstance(tree, (exp.Condition, exp.Predicate)) or isinstance(tree, (exp.Column, exp.Literal)):
            raise self.fail(node, "row_filter must be a condition, e.g. district_code = :district")
        if tree.find(exp.Select, exp.Func) and not all(isinstance(f, exp.Cast) for f in tree.find_all(exp.Func)):
            raise self.fail(node, "row_filter may use columns, literals, comparisons, AND, OR and IN only")
        for placeholder in tree.find_all(exp.Placeholder):
            if placeholder.name not in PRINCIPAL_PARAMETERS:
                raise self.fail(node, f"row_filter: unknown parameter :{placeholder.name} "
                                      f"(known: {', '.join(':' + p for p in PRINCIPAL_PARAMETERS)})")
        return text


def _construct(node: yaml.ScalarNode) -> Any:
    """Build the Python value of one scalar node with the safe loader's rules."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
