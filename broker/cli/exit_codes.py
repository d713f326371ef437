"""The CLI's exit codes by kind of outcome, and the one place a gRPC status code becomes one.

Scripts branch on these: a refusal (fix the query) is not an outage (retry later), and a log that
fails verification is not a broker that cannot be reached. ``dsbroker --help`` and the README print
:data:`EXIT_CODES` as it is written here.
"""

from __future__ import annotations

import enum

from dsbroker.errors import DsbrokerError


class ExitCode(enum.IntEnum):
    """What a dsbroker command's exit status means."""

    OK = 0
    FAILED = 1  # anything else: the server's INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED, ...
    USAGE = 2  # click's own, and a local option or configuration that cannot work (CONFIG_INVALID)
    REFUSED = 3  # the server refused: guard, grant, policy, quota, role
    NOT_FOUND = 4
    UNAVAILABLE = 5  # the broker or a sandbox did not answer in time
    UNAUTHENTICATED = 6  # no token, or one that does not verify
    CHECK_FAILED = 7  # audit verify / reconcile found a problem; policy lint found one
    NOT_VERIFIED = 8  # audit verify: no pinned key, so nothing signed could be checked


# One line per code, for --help and the README (gettext msgids: the help prints them translated).
EXIT_CODES: tuple[tuple[ExitCode, str], ...] = (
    (ExitCode.OK, "success"),
    (ExitCode.FAILED, "any other failure (the server's INTERNAL, UNKNOWN, DATA_LOSS, ...)"),
    (ExitCode.USAGE, "usage: a wrong option or argument, or a local configuration that cannot work"),
    (ExitCode.REFUSED, "refused by the server: INVALID_ARGUMENT, FAILED_PRECONDITION, PERMISSION_DENIED, "
                       "RESOURCE_EXHAUSTED, ALREADY_EXISTS, OUT_OF_RANGE, ABORTED"),
    (ExitCode.NOT_FOUND, "not found: NOT_FOUND"),
    (ExitCode.UNAVAILABLE, "the broker or a sandbox is down or slow: UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED"),
    (ExitCode.UNAUTHENTICATED, "not authenticated: UNAUTHENTICATED (no token, or one that does not verify)"),
    (ExitCode.CHECK_FAILED, "a check found problems: audit verify, audit reconcile, policy lint"),
    (ExitCode.NOT_VERIFIED, "audit verify without a pinned key: nothing signed could be checked"),
)

_BY_STATUS = {
    "INVALID_ARGUMENT": ExitCode.REFUSED, "FAILED_PRECONDITION": ExitCode.REFUSED,
    "PERMISSION_DENIED": ExitCode.REFUSED, "RESOURCE_EXHAUSTED": ExitCode.REFUSED,
    "ALREADY_EXISTS": ExitCode.REFUSED, "OUT_OF_RANGE": ExitCode.REFUSED, "ABORTED": ExitCode.REFUSED,
    "NOT_FOUND": ExitCode.NOT_FOUND,
    "UNAVAILABLE": ExitCode.UNAVAILABLE, "DEADLINE_EXCEEDED": ExitCode.UNAVAILABLE, "CANCELLED": ExitCode.UNAVAILABLE,
    "UNAUTHENTICATED": ExitCode.UNAUTHENTICATED,
}
# Reasons raised here, before any call, that say the command line itself cannot work.
_LOCAL_USAGE_REASONS = {"CONFIG_INVALID"}


def exit_code_for(error: DsbrokerError) -> ExitCode:
    """The exit code of a command that failed with ``error`` (by its status code; local configuration: usage)."""
    if error.reason in _LOCAL_USAGE_REASONS:
        return ExitCode.USAGE
    return _BY_STATUS.get(error.code_name, ExitCode.FAILED)
