"""``dsbroker policy lint`` beyond parsing: what loads but will not serve, and what a policy names,
checked against a sandbox's data.

A policy that loads may still serve no query: one without ``grantee.district`` (written before the
grantee named its district) is refused at the broker and the sandbox, so lint flags it. Some settings
serve but weaken a protection on the owner's word: a grant whose dominance rule is off (``dominance:
off``) gets a warning with the owner's reason, for the reviewer and the owner to read before they
sign; a warning does not fail lint. With the
sandbox's configuration (its engine, data file or PostgreSQL database, and the datasets it serves) lint finds before
signing what the sandbox would refuse at the first plan: a dataset it does not serve, a column the
dataset lacks, and every lookup problem :class:`sandbox.checks.lookups.LookupChecker` reports, and a
column of ``values`` whose data holds a value the grant does not list. A data product whose query the guard
refuses under its own grant is a problem too: it would be refused at every run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

from broker.cli.i18n import N_, _, n_
from dsbroker.errors import ConfigError, DsbrokerError
from dsbroker.policy.model import DOMINANCE_OFF_REASON, ColumnLevel, Policy
from dsbroker.settings import load_settings
from sandbox.settings import SandboxSettings


@contextlib.contextmanager
def sandbox_checker(config: str) -> Iterator:
    """A LookupChecker over the tables the sandbox configured in ``config`` serves (its engine, read-only)."""
    from sandbox.checks.lookups import LookupChecker
    from sandbox.engine.configured import serving_engine

    settings = load_settings(SandboxSettings, config)
    if not settings.datasets:
        raise ConfigError(f"{config}: the sandbox configuration names no datasets")
    with serving_engine(settings, config) as engine:
        yield LookupChecker.for_engine(engine, settings.datasets)


def policy_problems(policy: Policy) -> list[tuple[int, str]]:
    """(line, problem) for what in a loaded policy keeps it from serving."""
    if policy.district is None:
        return [(_line_of(policy.document, "grantee:"), _(
            'grantee.district is missing; name the grantee\'s district (grantee: {{department: ..., district: '
            '"320102"}}): no query runs under a grant without it').format())]
    return product_problems(policy)


def product_problems(policy: Policy) -> list[tuple[int, str]]:
    """(line, problem) for each data product whose query the guard refuses under its own grant: it would be refused
    at every run. Checked with each parameter at its first allowed value (a range's low end, a list's first member);
    the guard's verdict on a product's shape does not depend on which literals fill it."""
    from dsbroker.errors import DsbrokerError
    from dsbroker.guard import guard
    from dsbroker.policy.product_binding import bind_product

    assert policy.district is not None
    problems = []
    for name, product in policy.products.items():
        values = {parameter.name: str(parameter.low) if parameter.type in ("date", "integer") else parameter.values[0]
                  for parameter in product.parameters.values()}
        try:
            guard(bind_product(product, values), policy, district=policy.district, department=policy.department)
        except DsbrokerError as error:
            problems.append((_line_of(policy.document, f"{name}:"), f"products.{name}: the guard refuses its query "
                                                                     f"under this grant ({error.reason}: {error})"))
    return problems


def policy_warnings(policy: Policy) -> list[tuple[int, str]]:
    """(line, warning) for what in a loaded policy serves but weakens a protection, for whoever signs it."""
    if policy.dominance_waiver is None:
        return []
    line = _line_of(policy.document, f"{DOMINANCE_OFF_REASON}:", "dominance:")
    return [(line, waiver_warning(policy.dominance_waiver))]


def waiver_warning(reason: str) -> str:
    """What a reader of a grant whose dominance rule is off is told (lint, policy show, review show)."""
    return _("the dominance rule is off: a SUM or AVG cell that one or two taxpayers make up is released; the "
             "owner's reason: {reason}").format(reason=reason)


def data_problems(policy: Policy, checker) -> list[tuple[int, str]]:
    """(line, problem) for each thing ``policy`` names that the checker's sandbox does not hold."""
    text = policy.document
    if policy.dataset not in checker.columns:
        return [(_line_of(text, "dataset:"), f"dataset {policy.dataset} is not served by the sandbox")]
    problems = [(_line_of(text, f"{column}:"), f"columns: {column!r} is not a column of {policy.dataset}")
                for column, level in policy.columns.items()
                if level is not ColumnLevel.HIDDEN and column not in checker.columns[policy.dataset]]
    for error in checker.problems(policy):
        problems.append((_line_of(text, error.metadata["table"] + ":", error.metadata["table"]), error.message))
    for error in checker.unlisted_values(policy):
        problems.append((_line_of(text, "values:"), error.message))
    return problems


def _line_of(text: str, *needles: str) -> int:
    """The first line holding one of ``needles`` (tried in order), else 1."""
    lines = text.splitlines()
    for needle in needles:
        for number, line in enumerate(lines, start=1):
            if needle in line and not line.lstrip().startswith("#"):
                return number
    return 1


@dataclass
class LintReport:
    """What lint found in one file: a load error, or problems and warnings by line."""

    file: str
    policy: str = ""  # "id vN" once it loads
    error: str = ""
    problems: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    checked: tuple[str, ...] = ()  # what else was checked: approvals, the sandbox's data

    @property
    def ok(self) -> bool:
        """No load error and no problem (warnings do not fail lint)."""
        return not self.error and not self.problems

    def as_json(self) -> dict:
        """The report as ``policy lint --json`` prints it for this file."""
        return {"file": self.file, "ok": self.ok, "policy": self.policy, "error": self.error,
                "problems": [{"line": n, "message": m} for n, m in self.problems],
                "warnings": [{"line": n, "message": m} for n, m in self.warnings], "checked": list(self.checked)}

    def lines(self) -> list[tuple[str, bool]]:
        """The lines lint prints, each with whether it goes to standard error (all but the "ok" line)."""
        if self.error:
            return [(self.error if self.error.startswith(self.file) else f"{self.file}: {self.error}", True)]
        out = [(f"{self.file}:{n}: {m}", True) for n, m in self.problems]
        warning = _("warning")
        out += [(f"{self.file}:{n}: {warning}: {m}", True) for n, m in self.warnings]
        if not self.problems:
            checked = "".join(f", {_(c)}" for c in self.checked)
            count = len(self.warnings)
            checked += n_(", {count} warning", ", {count} warnings", count).format(count=count) if count else ""
            ok = _("ok")
            out.append((f"{self.file}: {ok} ({self.policy}{checked})", False))
        return out


def lint_file(file: str, trusted, checker) -> LintReport:
    """Lint one policy file: load it, verify its approvals against ``trusted`` (if any), check it against the
    sandbox's data through ``checker`` (if any)."""
    from dsbroker.policy.model import load_policy
    from dsbroker.policy.signing import verify_policy

    try:
        loaded = load_policy(file)
        if trusted is not None:
            verify_policy(loaded.document, trusted, source=file)
        problems = policy_problems(loaded) + (data_problems(loaded, checker) if checker is not None else [])
    except DsbrokerError as error:
        return LintReport(file, error=error.message)
    checked = ((N_("approvals verify"),) if trusted is not None else ()) + \
        ((N_("matches the sandbox's data"),) if checker is not None else ())
    return LintReport(file, policy=f"{loaded.id} v{loaded.version}", problems=problems,
                      warnings=policy_warnings(loaded), checked=checked)
