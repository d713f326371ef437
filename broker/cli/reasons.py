"""A refusal's message, and a result's disclosure rules, in the language in force.

Refusals are chosen by their ErrorInfo reason; disclosure rules by their rule name, filled from the
rule's column, threshold and cells withheld (the server's description stays in --json).


The server writes its messages in English and names rule, table and column in the metadata. Where a
reason is common enough to be worth a sentence of its own, the CLI prints that sentence translated and
filled from the metadata (never from the message, which may quote the caller's SQL); the reason and the
metadata are printed beside it unchanged, so nothing a script or an auditor matches on changes. In
English, or for any other reason, the server's own message is printed as it came.
"""

from __future__ import annotations

from broker.cli.i18n import N_, _, language
from dsbroker.errors import DsbrokerError

SENTENCES = {
    "RAW_ROWS": N_("raw rows are never released: aggregate (COUNT, SUM, AVG) and GROUP BY granted columns"),
    "TABLE_NOT_FOUND": N_("no such table under this grant"),
    "COLUMN_NOT_GRANTED": N_("column {column} is not granted (or does not exist)"),
    "ENTITY_COLUMN_MISUSED": N_("the entity column {column} may appear only inside COUNT(DISTINCT ...)"),
    "GRANT_NOT_FOUND": N_("no grant {grant} for your department"),
    "GRANT_NOT_ACTIVE": N_("grant {grant} is not active"),
    "QUOTA_EXCEEDED": N_("the grant's quota is used up"),
    "ROLE_REQUIRED": N_("this needs the role {role}"),
    "UNAUTHENTICATED": N_("not authenticated: pass a token (--token, $DSBROKER_TOKEN or a profile)"),
    "TOKEN_MISSING": N_("not authenticated: pass a token (--token, $DSBROKER_TOKEN or a profile)"),
    "TOKEN_INVALID": N_("the token does not verify"),
    "TOKEN_MALFORMED": N_("the token does not verify"),
    "TOKEN_EXPIRED": N_("the token has expired: get a new one"),
    "STATE_TRANSITION_INVALID": N_("not possible in the state it is in"),
    "ACCESS_REQUEST_NOT_FOUND": N_("no such access request"),
    "POLICY_NOT_FOUND": N_("no such policy"),
    "DATASET_NOT_FOUND": N_("no such dataset"),
    "ACCESS_RECORD_NOT_FOUND": N_("no such access record"),
    "SANDBOX_UNAVAILABLE": N_("the data owner's sandbox is not answering; try again later"),
    "UNAVAILABLE": N_("the broker is not answering; try again later"),
    "PRIVACY_BUDGET_EXHAUSTED": N_("the grant's privacy budget is spent"),
    "AD_HOC_QUERY_NOT_GRANTED": N_("grant {grant} answers only its products: see dsbroker product list"),
    "POLICY_VERSION_REUSED": N_("grant {policy} v{version} is reused: the owner signed another body of that version; "
                                "no query runs under it until the owner signs the change as a new version"),
}


RULE_NOTES = {
    "min_entities": N_("cells with fewer than {threshold} distinct {column} values are not released"),
    "secondary_suppression": N_("further cells are withheld so that no withheld cell is a total less its "
                                "released parts"),
    "dominance": N_("a SUM or AVG cell is withheld when its {threshold} largest {column} hold too much of it "
                    "(the dominance rule)"),
    "audit": N_("a cell is withheld when, with the cells released before, it would give away a total the other "
                "rules protect (the released-cell audit)"),
}


def rule_note(rule: dict) -> str:
    """One disclosure rule of a result as the table's notes print it."""
    note = RULE_NOTES.get(rule.get("rule", ""))
    if note is None or language() == "en":
        return rule.get("description", "")
    text = _(note).format_map(_Missing({k: str(v) for k, v in rule.items()}))
    withheld = rule.get("cells_withheld") or 0
    return text + (_(" ({count} withheld)").format(count=withheld) if withheld else "")


def explained(error: DsbrokerError) -> str:
    """The message to print for ``error``: a translated sentence for a known reason outside English, else its own."""
    sentence = SENTENCES.get(error.reason)
    if sentence is None or language() == "en":
        return error.message
    try:
        return _(sentence).format_map(_Missing(error.metadata))
    except (ValueError, IndexError):
        return error.message


class _Missing(dict):
    """Metadata where an absent field reads as "?" rather than failing the message."""

    def __missing__(self, key: str) -> str:
        return "?"
