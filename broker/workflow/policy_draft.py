"""Policies drafted from access requests, and the owner's narrowing of a draft.

The broker drafts a request's policy body deterministically from the request and the owner's
catalog; approvers sign that body. The owner may narrow it when approving (drop columns, raise the
threshold, shorten validity, lower the quota): :func:`narrow_policy` writes the narrowed body with
``narrows: sha256:<draft>``, and :func:`narrowing_problems` checks that a body only narrows its draft.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

from dsbroker.policy.products import render_products
from dsbroker.policy.model import (DEFAULT_DOMINANCE, DOMINANCE_OFF_REASON, ColumnLevel, Dominance, Policy,
                                   parse_policy, sums_measures)

# Why a draft for encrypted results turns the dominance rule off: the sandbox cannot withhold one encrypted
# cell, so such a grant cannot load with the rule on. The broker cannot know the owner's reason; it says
# what signing means instead, and review show and policy lint put it before whoever signs.
ENCRYPTED_WAIVER = ("the request asks for encrypted results, to which the sandbox cannot apply the dominance rule; "
                    "signing accepts that a sum one or two taxpayers make up may be released")


def drafted_dominance(policy: Policy) -> Policy:
    """``policy`` with the dominance rule a draft gets: the default where a SUM or AVG of a measure can be
    asked for, turned off (with :data:`ENCRYPTED_WAIVER`) when encrypted results are asked for too."""
    if not sums_measures(policy.aggregates, policy.columns):
        return dataclasses.replace(policy, dominance=None, dominance_waiver=None)
    if "encrypted" in policy.results:
        return dataclasses.replace(policy, dominance=None, dominance_waiver=ENCRYPTED_WAIVER)
    return dataclasses.replace(policy, dominance=DEFAULT_DOMINANCE, dominance_waiver=None)


def render_policy(policy: Policy, *, comment: str = "") -> str:
    """A policy's body as canonical YAML text (no approvals), the same for the same fields."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()] if comment else []
    lines += [f"id: {policy.id}", f"version: {policy.version}"]
    if policy.request:
        lines.append(f"request: {policy.request}")
    if policy.narrows:
        lines.append(f"narrows: {_quoted(policy.narrows)}")
    district = f", district: {_quoted(policy.district)}" if policy.district else ""
    lines += [f"grantee: {{department: {policy.department}{district}}}", f"purpose: {_quoted(policy.purpose)}",
              f"dataset: {policy.dataset}", "columns:"]
    lines += [f"  {name}: {level.value}" for name, level in policy.columns.items()]
    lines.append(f"aggregates: [{', '.join(policy.aggregates)}]")
    if policy.row_filter:
        lines.append(f"row_filter: {_quoted(policy.row_filter)}")
    dropped = ", suppressed: drop" if policy.suppression == "drop" else ""
    lines.append(f"disclosure: {{min_entities: {policy.min_entities}{_dominance(policy)}{dropped}}}")
    limits = {"valid_from": policy.valid_from, "valid_until": policy.valid_until, "max_groups": policy.max_groups,
              "queries_per_day": policy.queries_per_day, "queries_total": policy.queries_total}
    rendered = ", ".join(f"{key}: {value.isoformat() if isinstance(value, dt.date) else value}"
                         for key, value in limits.items() if value is not None)
    lines.append(f"limits: {{{rendered}}}")
    lines.append(f"results: [{', '.join(policy.results)}]")
    if policy.products_only:
        lines.append("queries: products")
    text = "\n".join(lines) + "\n"
    if policy.products:  # last: the approvers read each product's query as the catalog offers it
        text += render_products(policy.products)
    parse_policy(text, source="<drafted policy>")  # what we render must load
    return text


def _dominance(policy: Policy) -> str:
    """The dominance rule or its waiver inside ``disclosure: {...}``, written out so that signers read it."""
    if policy.dominance_waiver is not None:
        return f", dominance: off, {DOMINANCE_OFF_REASON}: {_quoted(policy.dominance_waiver)}"
    rule: Dominance | None = policy.dominance
    if rule is None:
        return ""
    written = f", dominance: {{n: {rule.n}, k: {rule.k:g}}}" if rule.n is not None else ""
    return written + (f", p_percent: {rule.p:g}" if rule.p is not None else "")


def narrow_policy(draft: str, *, drop_columns: tuple[str, ...] = (), min_entities: int | None = None,
                  valid_until: dt.date | None = None, queries_per_day: int | None = None,
                  queries_total: int | None = None) -> str:
    """The owner's narrowing of ``draft``; the draft itself when nothing changes.

    Raises ValueError when a change would widen the draft instead.
    """
    policy = parse_policy(draft, source="<draft policy>")
    columns = dict(policy.columns)
    for name in drop_columns:
        if name not in columns:
            raise ValueError(f"column {name!r} is not in the draft")
        if columns[name] is ColumnLevel.ENTITY:
            raise ValueError(f"column {name!r} is the entity (the privacy unit) and cannot be dropped")
        del columns[name]
    narrowed = dataclasses.replace(
        policy, columns=columns,
        min_entities=min_entities if min_entities is not None else policy.min_entities,
        valid_until=valid_until or policy.valid_until,
        queries_per_day=queries_per_day if queries_per_day is not None else policy.queries_per_day,
        queries_total=queries_total if queries_total is not None else policy.queries_total)
    if narrowed == policy:
        return draft
    narrowed = dataclasses.replace(narrowed, narrows="sha256:" + hashlib.sha256(draft.encode()).hexdigest())
    problems = narrowing_problems(policy, narrowed)
    if problems:
        raise ValueError("; ".join(problems))
    return render_policy(narrowed, comment=f"Narrowed by the owner from the draft of request {policy.request}."
                         if policy.request else "Narrowed by the owner.")


def narrowing_problems(draft: Policy, final: Policy) -> list[str]:
    """What in ``final`` is wider than, or not derived from, ``draft`` (empty when it only narrows)."""
    return (_changed_fields(draft, final) + _column_problems(draft, final) + _answer_problems(draft, final)
            + _disclosure_problems(draft, final) + _validity_problems(draft, final))


def _changed_fields(draft: Policy, final: Policy) -> list[str]:
    return [f"{name} differs from the draft"
            for name in ("id", "version", "department", "district", "purpose", "dataset", "row_filter", "request",
                         "max_groups", "partitions", "products")
            if getattr(final, name) != getattr(draft, name)] + (
        ["the final answers SQL of the caller's own where the draft answers only its products"]
        if draft.products_only and not final.products_only else [])


def _column_problems(draft: Policy, final: Policy) -> list[str]:
    problems = []
    for column, level in final.columns.items():
        if draft.columns.get(column) is not level:
            problems.append(f"column {column!r} is not in the draft at level {level.value}")
    if draft.entity_column not in final.columns:
        problems.append("the entity column was dropped")
    return problems


def _answer_problems(draft: Policy, final: Policy) -> list[str]:
    """Aggregates, result modes, min/max, range grids and lookups: only the draft's, or fewer, or coarser."""
    problems = []
    if not set(final.aggregates) <= set(draft.aggregates):
        problems.append("aggregates widen the draft")
    if not set(final.results) <= set(draft.results):
        problems.append("result modes widen the draft")
    for column, extremes in final.min_max.items():
        if not set(extremes) <= set(draft.min_max.get(column, ())):
            problems.append(f"min_max on {column!r} widens the draft")
    for column, grid in final.ranges.items():
        if column not in draft.ranges or grid % draft.ranges[column]:
            problems.append(f"ranges on {column!r} widen the draft (a finer grid or a new measure)")
    for table, lookup in final.lookups.items():
        if lookup != draft.lookups.get(table):
            problems.append(f"lookup {table} is not in the draft")
    return problems


def _disclosure_problems(draft: Policy, final: Policy) -> list[str]:
    problems = []
    if final.min_entities < draft.min_entities:
        problems.append("min_entities is lower than the draft's")
    # A draft whose rule is off (a waiver) may be narrowed to one with the rule on, not the other way.
    if draft.dominance is not None and final.dominance != draft.dominance:
        problems.append("the dominance rule differs from the draft's"
                        + (" (the final turns it off)" if final.dominance_waiver is not None else ""))
    if draft.suppression == "drop" and final.suppression != "drop":
        problems.append("suppressed cells are marked where the draft drops them (marking shows that a group exists)")
    if draft.noise is not None and final.noise != draft.noise:
        problems.append("the noise settings differ from the draft's")
    return problems


def _validity_problems(draft: Policy, final: Policy) -> list[str]:
    """The validity window and the quotas: no longer, no higher."""
    problems = []
    if draft.valid_from and (final.valid_from is None or final.valid_from < draft.valid_from):
        problems.append("valid_from is earlier than the draft's")
    if draft.valid_until and (final.valid_until is None or final.valid_until > draft.valid_until):
        problems.append("valid_until is later than the draft's")
    if final.valid_from and final.valid_until and final.valid_until < final.valid_from:
        problems.append("valid_until is before valid_from")
    for name in ("queries_per_day", "queries_total"):
        before, after = getattr(draft, name), getattr(final, name)
        if before is not None and (after is None or after > before):
            problems.append(f"{name} is higher than the draft's")
    return problems


def _quoted(text: str) -> str:
    # JSON strings are valid YAML double-quoted scalars.
    return json.dumps(text, ensure_ascii=False)
