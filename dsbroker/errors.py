"""The dsbroker error tree, and the registry of every reason an error can give.

Every failure a caller can see is a :class:`DsbrokerError`: a stable ``reason`` (UPPER_SNAKE_CASE,
the ``google.rpc.ErrorInfo.reason``), a message that never contains data values, and metadata that
names the rule, table and column involved. The classes below are the whole tree; each docstring says
when it is raised, and each subclass declares only its default reason.

:data:`REASONS` declares each reason exactly once: its status code, the metadata fields a raise site
may pass with it, and what it means. A raise site names the reason and nothing else; the code comes
from the reason's entry, so two sites of one reason cannot answer with two codes, and a reason cannot
be raised without being declared here (``tests/test_error_registry.py`` reads every raise site).

Codes are named, not imported: the registry says what kind of failure a reason is in the canonical
status codes (``google.rpc.Code``, whose names and numbers gRPC's ``grpc.StatusCode`` mirrors), and
:mod:`dsbroker.rpc.status` is the one place a name becomes a ``grpc.StatusCode`` and an error becomes
a status on the wire (ErrorInfo, BadRequest, QuotaFailure) and back. So this module needs no gRPC,
and no other module chooses a code. :attr:`DsbrokerError.code` is still the ``grpc.StatusCode``
that the SDK documents, resolved through :mod:`dsbroker.rpc.status`; ``code_name`` is its name.

An error rebuilt from a reply (:func:`dsbroker.rpc.status.error_from_rpc_error`) keeps the code and
reason the server sent, whether or not this registry knows them: a newer server may have more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence, get_args

from google.protobuf.message import Message
from google.rpc import error_details_pb2

if TYPE_CHECKING:
    import grpc

ERROR_DOMAIN = "dsbroker"
# What a reply may carry of a caller's own input. gRPC sends the message twice (grpc-message,
# percent-encoded, and inside grpc-status-details-bin with the details) in trailers that receivers
# cap at 8 KiB by default, so a message is cut at 1 KiB of UTF-8 and each metadata value at 256 bytes:
# no reply grows too large to deliver, whatever a caller sends.
ECHO_CHARS = 64
MAX_MESSAGE_BYTES = 1024
MAX_METADATA_BYTES = 256


def clipped(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (on a character boundary), marked with "…" when cut."""
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes - 3].decode("utf-8", "ignore") + "…"


def shown(value: object, chars: int = ECHO_CHARS) -> str:
    """A caller's value as a message quotes it: its repr, cut to ``chars`` characters. Use it for every
    name, id or text that came from the caller, so a message never echoes a huge input."""
    text = str(value)
    return repr(text if len(text) <= chars else text[:chars] + "…")


# -- the error tree ------------------------------------------------------------------------------------

class DsbrokerError(Exception):
    """Base of every error dsbroker reports to a caller.

    ``reason`` is one of :data:`REASONS` (the class's default when not given); the status code is that
    reason's. ``code`` is only for an error received from elsewhere (:mod:`dsbroker.rpc.status`), which
    keeps the code it came with; errors raised here never pass it."""

    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        code: grpc.StatusCode | str | None = None,
        details: Sequence[Message] = (),
        **metadata: str | int | None,
    ) -> None:
        message = clipped(message, MAX_MESSAGE_BYTES)  # the last line of defence; callers use shown()
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        # The name of the status code: a received error's own (a grpc.StatusCode or its name), else the reason's.
        self.code_name: str = (code if isinstance(code, str) else code.name) if code is not None \
            else code_of(self.reason, type(self))
        self.metadata = {k: clipped(str(v), MAX_METADATA_BYTES) for k, v in metadata.items() if v is not None}
        self.details = tuple(details)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__ or "code_name" in cls.__dict__:
            raise TypeError(f"{cls.__name__} declares a code: an error's code is its reason's, in REASONS")

    @property
    def code(self) -> grpc.StatusCode:
        """The gRPC status code, a ``grpc.StatusCode`` (through :mod:`dsbroker.rpc.status`, which maps codes)."""
        from dsbroker.rpc.status import grpc_code  # not at the top: dsbroker.rpc.status imports this module

        return grpc_code(self.code_name)

    def rich_details(self) -> tuple[Message, ...]:
        """The google.rpc detail messages sent after the ErrorInfo (BadRequest, QuotaFailure, ...)."""
        return self.details

    def __str__(self) -> str:
        return self.message


class GuardError(DsbrokerError):
    """Raised by a guard rule when a query is refused.

    ``rule`` names the guard rule; ``table`` and ``column`` what it objected to.
    """

    reason = "QUERY_REFUSED"

    def rich_details(self) -> tuple[Message, ...]:
        violation = error_details_pb2.BadRequest.FieldViolation(field="sql", description=self.message)
        return (error_details_pb2.BadRequest(field_violations=[violation]), *self.details)


class GuardPermissionError(GuardError):
    """Raised when a query reaches for a column or table the grant does not cover: the guard's refusals
    whose reason is PERMISSION_DENIED."""


class GrantError(DsbrokerError):
    """Raised when the caller has no usable grant: unknown, not theirs, or not active."""

    reason = "GRANT_NOT_FOUND"


class RoleError(DsbrokerError):
    """Raised when an authenticated caller lacks the role a method requires."""

    reason = "ROLE_REQUIRED"


class AuthenticationError(DsbrokerError):
    """Raised when a call carries no credentials or credentials that do not verify."""

    reason = "UNAUTHENTICATED"


class PolicyFileError(DsbrokerError):
    """Raised when a policy file does not parse or validate; names the file and line."""

    reason = "POLICY_INVALID"

    def __init__(self, message: str, *, path: str, line: int | None = None, **metadata: Any) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}", path=path, line=line, **metadata)
        self.path = path
        self.line = line


class QuotaError(DsbrokerError):
    """Raised when a caller is over a limit; carries a google.rpc.QuotaFailure naming what ran out."""

    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, subject: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.subject = subject

    def rich_details(self) -> tuple[Message, ...]:
        violation = error_details_pb2.QuotaFailure.Violation(subject=self.subject, description=self.message)
        return (error_details_pb2.QuotaFailure(violations=[violation]), *self.details)


class ConfigError(DsbrokerError):
    """Raised when a configuration file or flag is invalid."""

    reason = "CONFIG_INVALID"


class RequestFieldError(DsbrokerError):
    """A request field that is missing, malformed or out of range; INVALID_ARGUMENT with a BadRequest
    naming the field."""

    reason = "REQUEST_FIELD_INVALID"

    def __init__(self, message: str, *, field: str, **metadata: Any) -> None:
        super().__init__(message, field=field, **metadata)
        self.field = field

    def rich_details(self) -> tuple[Message, ...]:
        return (error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)]), *self.details)


class PolicySignatureError(DsbrokerError):
    """Raised when a policy's approvals do not verify against the trusted keys."""

    reason = "POLICY_SIGNATURE_INVALID"


class StatementError(DsbrokerError):
    """Raised when a statement is not one this version reads (malformed, or not in canonical form).

    Its ``statement_field`` names the statement's own field at fault (``field`` is kept for the request's)."""

    reason = "STATEMENT_INVALID"


class StatementSignatureError(DsbrokerError):
    """Raised when a statement is not signed by a key the owner trusts for the owner role."""

    reason = "STATEMENT_SIGNATURE_INVALID"


class EncryptionKeyError(DsbrokerError):
    """Raised when a public context is not one this version encrypts under."""

    reason = "ENCRYPTION_KEY_INVALID"


class SandboxError(DsbrokerError):
    """Raised when the sandbox cannot be reached, refuses a plan, or fails to run it."""

    reason = "SANDBOX_UNAVAILABLE"


class ExecutionError(DsbrokerError):
    """Raised inside the sandbox when the engine fails; the message is generic on purpose."""

    reason = "EXECUTION_FAILED"


class AccessLogError(DsbrokerError):
    """Raised when the access log cannot record an access; the access is then refused."""

    reason = "ACCESS_LOG_UNAVAILABLE"


class AccessLogTampered(AccessLogError):
    """Raised when the log holds a record no trusted broker sealed, or lost records a broker wrote: the
    broker refuses to extend (or checkpoint) a chain it cannot vouch for, and every access with it."""

    reason = "ACCESS_LOG_TAMPERED"


# The broker's (broker/): the catalog, the request workflow and its store, the partitions' secure sum, the SDK.

class CatalogUnknownDataset(DsbrokerError):
    """Raised for a dataset no sandbox publishes."""

    reason = "DATASET_NOT_FOUND"


class TransitionError(DsbrokerError):
    """Raised for an action the current state does not allow."""

    reason = "STATE_TRANSITION_INVALID"


class StoreError(DsbrokerError):
    """Raised when the store cannot be reached or written; the change did not happen."""

    reason = "STORE_UNAVAILABLE"


class PartitionError(DsbrokerError):
    """Raised when the partitions' answers cannot be added up."""

    reason = "PARTITIONS_INCONSISTENT"


class KeyMismatchError(DsbrokerError):
    """Raised when a result is encrypted under a key other than the one decrypting it."""

    reason = "ENCRYPTION_KEY_MISMATCH"


# The sandbox's (sandbox/): its checks of each plan, and its ledgers.

class PlanRefused(DsbrokerError):
    """Raised when a plan is not what the guard makes of the requester's SQL for the requester."""

    reason = "PLAN_NOT_GUARDED"


class KeyNotBound(DsbrokerError):
    """Raised for an encrypted plan whose key the caller did not sign for this query."""

    reason = "ENCRYPTION_KEY_NOT_BOUND"


class PolicyStandingError(DsbrokerError):
    """Raised for a plan under a policy version the owner has revoked or replaced, or of which the owner signed two
    bodies (POLICY_REVOKED, POLICY_SUPERSEDED, POLICY_VERSION_REUSED: always given)."""


class PlanReplayed(DsbrokerError):
    """Raised when a plan's execution id has run here before: each id runs once."""

    reason = "PLAN_REPLAYED"


class ExecutionLedgerError(DsbrokerError):
    """Raised when the ledger cannot record a plan; the plan is then not run."""

    reason = "EXECUTION_LEDGER_UNAVAILABLE"


class PolicyLedgerError(DsbrokerError):
    """Raised when the ledger cannot record what the owner said; the plan or statement is then refused."""

    reason = "POLICY_LEDGER_UNAVAILABLE"


class LedgerTampered(DsbrokerError):
    """Raised when the privacy ledger was changed by someone without its key: no noisy answer is given."""

    reason = "PRIVACY_LEDGER_TAMPERED"


class BudgetExhausted(DsbrokerError):
    """Raised when a grant's privacy budget (its share of the dataset's) cannot pay for another query."""

    reason = "PRIVACY_BUDGET_EXHAUSTED"


class DatasetBudgetExhausted(DsbrokerError):
    """Raised when the dataset's privacy budget, which all its noise grants spend, cannot pay for another query."""

    reason = "DATASET_BUDGET_EXHAUSTED"


class ProductError(DsbrokerError):
    """Raised when a product call is refused: a product the grant lacks, or a parameter missing, unknown, of the
    wrong type, out of range or not an allowed member (the reason says which; metadata names the product and the
    parameter, never its value)."""

    reason = "PRODUCT_PARAMETER_INVALID"

    def rich_details(self) -> tuple[Message, ...]:
        parameter = self.metadata.get("parameter")
        if parameter is None:
            return self.details
        violation = error_details_pb2.BadRequest.FieldViolation(field=f"product.parameters[{parameter}]",
                                                                description=self.message)
        return (error_details_pb2.BadRequest(field_violations=[violation]), *self.details)


class WitnessError(DsbrokerError):
    """Raised when the sandbox will not witness a checkpoint."""

    reason = "WITNESS_REFUSED"


# -- the registry of reasons ------------------------------------------------------------------------------

Code = Literal["CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
               "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
               "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]
CODES: tuple[str, ...] = get_args(Code)  # the canonical codes an error may have (every one but OK)


@dataclass(frozen=True)
class Reason:
    """One reason an error can give: ``name`` is the ErrorInfo reason, ``code`` the status code every error
    with it answers with, ``fields`` the ErrorInfo metadata keys a raise site may pass with it, and
    ``summary`` what it means."""

    name: str
    code: Code
    fields: tuple[str, ...]
    summary: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", self.name):
            raise ValueError(f"reason {self.name!r} is not UPPER_SNAKE_CASE")
        if self.code not in CODES:
            raise ValueError(f"reason {self.name}: {self.code!r} is not a status code")


GUARD = ("rule", "table", "column")  # what every refusal of the guard may name

# The guard's refusals (GuardError, raised by dsbroker.guard's rules through refuse()); the README's table of
# refusals explains each. The three of a table or column the grant does not cover are PERMISSION_DENIED.
GUARD_REFUSALS = (
    Reason("QUERY_REFUSED", "INVALID_ARGUMENT", GUARD, "the guard refuses the query (GuardError's default)"),
    Reason("SYNTAX_ERROR", "INVALID_ARGUMENT", GUARD + ("line", "col"), "the query does not parse"),
    Reason("EMPTY_QUERY", "INVALID_ARGUMENT", GUARD, "no statement at all"),
    Reason("SQL_TOO_LARGE", "INVALID_ARGUMENT", GUARD + ("limit",), "a query text over 1 MiB"),
    Reason("LITERAL_INVALID", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a date or timestamp literal that is not one"),
    Reason("MULTIPLE_STATEMENTS", "INVALID_ARGUMENT", GUARD, "more than one statement"),
    Reason("STATEMENT_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("statement",), "a statement other than SELECT"),
    Reason("SET_OPERATION_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("statement", "construct"),
           "UNION, INTERSECT or EXCEPT"),
    Reason("RAW_ROWS", "INVALID_ARGUMENT", GUARD, "SELECT *, or no aggregate and no GROUP BY"),
    Reason("TABLE_NOT_FOUND", "PERMISSION_DENIED", GUARD,
           "a table other than the grant's dataset and lookups, whether or not it exists"),
    Reason("TABLE_REQUIRED", "INVALID_ARGUMENT", GUARD, "a query that does not read FROM the grant's dataset"),
    Reason("JOIN_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a join the grant's lookups do not allow, or of a kind other than JOIN and LEFT JOIN"),
    Reason("JOIN_CONDITION_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD, "a join on anything but the lookup's key"),
    Reason("AMBIGUOUS_TABLE_NAME", "INVALID_ARGUMENT", GUARD, "a name that means two tables of the query"),
    Reason("AMBIGUOUS_COLUMN", "INVALID_ARGUMENT", GUARD, "an unqualified column that two tables have"),
    Reason("COLUMN_NOT_GRANTED", "PERMISSION_DENIED", GUARD, "a hidden or unknown column (the same answer)"),
    Reason("RESULT_MODE_NOT_GRANTED", "PERMISSION_DENIED", GUARD + ("mode",),
           "a result mode (plaintext, encrypted) the grant does not release"),
    Reason("ENTITY_COLUMN_MISUSED", "INVALID_ARGUMENT", GUARD, "the entity column anywhere but COUNT(DISTINCT …)"),
    Reason("GROUP_BY_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD,
           "grouping by anything but group columns and their date parts"),
    Reason("BUCKET_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a CASE group key that is not a bucket: literal labels for conditions on one group column"),
    Reason("OUTPUT_NOT_AGGREGATED", "INVALID_ARGUMENT", GUARD, "a column neither grouped nor aggregated"),
    Reason("AGGREGATE_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("function",),
           "an aggregate the grant lacks, or one in a clause that takes none"),
    Reason("AGGREGATE_ARGUMENT_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("function",),
           "an aggregate of a non-measure, of text, or a COUNT of anything but *, a measure or DISTINCT entity"),
    Reason("AGGREGATE_ARGUMENT_NOT_LINEAR", "INVALID_ARGUMENT", GUARD + ("function", "construct"),
           "inside an aggregate, anything but a linear form of measures"),
    Reason("DISTINCT_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD, "DISTINCT but in COUNT(DISTINCT entity)"),
    Reason("NESTED_AGGREGATE", "INVALID_ARGUMENT", GUARD, "an aggregate inside an aggregate"),
    Reason("NUMBER_OUT_OF_RANGE", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a number or coefficient beyond ±1e38 or longer than the guard reads"),
    Reason("FILTER_TYPE_MISMATCH", "INVALID_ARGUMENT", GUARD, "a literal of another type than its column"),
    Reason("JOIN_TYPE_MISMATCH", "INVALID_ARGUMENT", GUARD, "a lookup key of another type than the dataset's"),
    Reason("MEASURE_TYPE_NOT_SUMMABLE", "INVALID_ARGUMENT", GUARD, "a measure whose sum could overflow in the engine"),
    Reason("QUERY_TOO_COMPLEX", "INVALID_ARGUMENT", GUARD, "past the limits on the query itself"),
    Reason("CONDITIONAL_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "CASE, IF or FILTER"),
    Reason("FUNCTION_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("function",), "a function off the allowlist"),
    Reason("SUBQUERY_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "a subquery"),
    Reason("CTE_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "WITH (a common table expression)"),
    Reason("WINDOW_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "a window function (OVER) or QUALIFY"),
    Reason("LATERAL_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "LATERAL"),
    Reason("OFFSET_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "OFFSET"),
    Reason("PARAMETER_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "a query parameter"),
    Reason("CONSTRUCT_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",),
           "any other construct the guard does not reason about"),
    Reason("OR_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD, "OR in WHERE"),
    Reason("NEGATION_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD, "NOT, <> or NOT IN in WHERE"),
    Reason("FILTER_COLUMN_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD, "a filter on a column that may not be filtered on"),
    Reason("FILTER_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a filter that is not a column (or date part) against literals"),
    Reason("DATE_TEXT_MISTYPED", "INVALID_ARGUMENT", GUARD,
           "a strftime key's text in HAVING compared with something other than a text (a number, a date, a column, "
           "arithmetic)"),
    Reason("RANGE_NOT_BOUNDED", "INVALID_ARGUMENT", GUARD, "a one-sided range"),
    Reason("RANGE_REQUIRED", "INVALID_ARGUMENT", GUARD,
           "a measure filtered other than in a range bounded on both sides"),
    Reason("ALIAS_SHADOWS_COLUMN", "INVALID_ARGUMENT", GUARD, "an output name that is also a column's"),
    Reason("DUPLICATE_ALIAS", "INVALID_ARGUMENT", GUARD, "an output name used twice"),
    Reason("ALIAS_RESERVED", "INVALID_ARGUMENT", GUARD, "an output name starting with two underscores"),
    Reason("POSITION_OUT_OF_RANGE", "INVALID_ARGUMENT", GUARD, "a GROUP BY or ORDER BY position naming no output"),
    Reason("LIMIT_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD, "a LIMIT that is not a whole number"),
    Reason("TOTALS_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",),
           "totals (ROLLUP, CUBE, GROUPING SETS) under noise or a dominance rule"),
    Reason("TOTALS_EXTREME_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("function", "construct"),
           "MIN or MAX with totals"),
    Reason("TOTALS_HAVING_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "HAVING with totals"),
    Reason("TOTALS_LIMIT_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",), "LIMIT with totals"),
    Reason("TOTALS_KEY_REPEATED", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a key listed twice in ROLLUP, CUBE or one grouping set"),
    Reason("TOTALS_KEY_NOT_OUTPUT", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a key of ROLLUP, CUBE or GROUPING SETS that is not an output column"),
    Reason("TOTALS_SET_REPEATED", "INVALID_ARGUMENT", GUARD + ("construct",), "a grouping set listed twice"),
    Reason("TOTALS_TOO_MANY_SETS", "INVALID_ARGUMENT", GUARD + ("construct",),
           "more grouping sets than one answer protects at once"),
    Reason("ENCRYPTED_DISCLOSURE_UNSUPPORTED", "INVALID_ARGUMENT", GUARD,
           "an encrypted query under a dominance rule this version does not apply to ciphertexts"),
    Reason("ENCRYPTED_TOTALS_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD, "totals in an encrypted query"),
    Reason("ENCRYPTED_CLAUSE_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("clause",),
           "HAVING, ORDER BY or LIMIT in an encrypted query"),
    Reason("ENCRYPTED_AGGREGATE_NOT_SUPPORTED", "INVALID_ARGUMENT", GUARD + ("function",),
           "an aggregate that does not add up across partitions, encrypted"),
    Reason("ENCRYPTED_OUTPUT_NOT_SUPPORTED", "INVALID_ARGUMENT", GUARD + ("function",),
           "an encrypted output other than a group key or one aggregate"),
    Reason("NOISE_HAVING_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD, "HAVING under noise"),
    Reason("NOISE_ORDER_NOT_SUPPORTED", "INVALID_ARGUMENT", GUARD, "ORDER BY anything but output columns, under noise"),
    Reason("NOISE_OUTPUT_NOT_SUPPORTED", "INVALID_ARGUMENT", GUARD + ("function",),
           "an output other than a group key or one aggregate, under noise"),
    Reason("NOISE_AGGREGATE_NOT_SUPPORTED", "INVALID_ARGUMENT", GUARD + ("function",),
           "an aggregate or argument the noise does not answer"),
    Reason("NOISE_BOUNDS_MISSING", "INVALID_ARGUMENT", GUARD + ("function",),
           "an aggregate of a measure the policy gives no clipping bounds for"),
    Reason("OUTER_READS_DATASET", "INVALID_ARGUMENT", GUARD,
           "the outer query of two levels reading the dataset itself, not an aggregate's released cells"),
    Reason("OUTER_COLUMN_NOT_FOUND", "INVALID_ARGUMENT", GUARD,
           "a column the outer query reads that no released table or granted lookup column has (hidden ones alike)"),
    Reason("OUTER_FILTER_ON_CELL", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a filter, grouping, DISTINCT or join on a released cell where what it keeps feeds a later aggregate"),
    Reason("OUTER_LIMIT_NOT_ALLOWED", "INVALID_ARGUMENT", GUARD + ("construct",),
           "LIMIT or OFFSET in a SELECT of the outer query other than the outermost"),
    Reason("TWO_LEVELS_NOT_SUPPORTED", "INVALID_ARGUMENT", GUARD + ("construct",),
           "a query of two levels under encryption, noise or with totals (ROLLUP), not answered yet"),
)

REASONS_DECLARED: tuple[Reason, ...] = GUARD_REFUSALS + (
    # -- any call ------------------------------------------------------------------------------------------
    Reason("INTERNAL", "INTERNAL", (), "an unexpected failure; the operator's log has the details"),
    Reason("CONFIG_INVALID", "FAILED_PRECONDITION", (), "a configuration file, setting or flag is invalid"),
    Reason("UNAUTHENTICATED", "UNAUTHENTICATED", (), "a call without credentials"),
    Reason("TOKEN_MISSING", "UNAUTHENTICATED", (), "a call without a bearer token"),
    Reason("TOKEN_MALFORMED", "UNAUTHENTICATED", (),
           "an authorization header or token that is not a readable bearer JWT, or too long"),
    Reason("TOKEN_KEY_UNKNOWN", "UNAUTHENTICATED", (), "a token signed with a key the broker does not know"),
    Reason("TOKEN_ALGORITHM_NOT_ALLOWED", "UNAUTHENTICATED", (),
           "a token whose algorithm is not allowed or does not match its key"),
    Reason("TOKEN_INVALID", "UNAUTHENTICATED", (), "a token whose signature does not verify"),
    Reason("TOKEN_EXPIRED", "UNAUTHENTICATED", (), "an expired token"),
    Reason("TOKEN_NOT_YET_VALID", "UNAUTHENTICATED", (), "a token not valid yet, or issued in the future"),
    Reason("TOKEN_AUDIENCE_INVALID", "UNAUTHENTICATED", (), "a token for another audience"),
    Reason("TOKEN_ISSUER_INVALID", "UNAUTHENTICATED", (), "a token from an untrusted issuer"),
    Reason("TOKEN_CLAIMS_MISSING", "UNAUTHENTICATED", ("claim",), "a token without a claim the server requires"),
    Reason("TOKEN_CLAIMS_INVALID", "UNAUTHENTICATED", ("claim",),
           "a token claim of the wrong form, or an unknown role"),
    Reason("TOKEN_BINDING_UNSUPPORTED", "UNAUTHENTICATED", ("claim",),
           "a token bound (cnf) other than by a client certificate thumbprint"),
    Reason("TOKEN_CERTIFICATE_MISMATCH", "UNAUTHENTICATED", (),
           "a token not bound to the client certificate it came with, or not its subject's"),
    Reason("ROLE_REQUIRED", "PERMISSION_DENIED", ("role",), "an authenticated caller without the role the call needs"),
    Reason("REQUEST_ID_INVALID", "INVALID_ARGUMENT", (),
           "a request id that is not 1 to 128 letters, digits or . _ : -"),
    Reason("REQUEST_UNDECODABLE", "INVALID_ARGUMENT", (),
           "a request body that does not decode as the method's message"),
    Reason("DEADLINE_REQUIRED", "INVALID_ARGUMENT", (), "a call without the deadline that is its query's time limit"),
    Reason("TOO_MANY_CALLS", "RESOURCE_EXHAUSTED", (), "more of one caller's calls in flight than allowed"),
    Reason("TOO_MANY_FAILED_CALLS", "RESOURCE_EXHAUSTED", (),
           "a client past max_refusals_per_client refused calls in a second"),
    # -- request fields (RequestFieldError: a BadRequest names the field) ---------------------------------
    Reason("REQUEST_FIELD_INVALID", "INVALID_ARGUMENT", ("field", "column"),
           "a request field that is missing, malformed or out of range"),
    Reason("FIELD_TOO_LONG", "INVALID_ARGUMENT", ("field",), "a text longer than its field's limit"),
    Reason("FIELD_REQUIRED", "INVALID_ARGUMENT", ("field",), "a required field left blank"),
    Reason("PAGE_SIZE_INVALID", "INVALID_ARGUMENT", ("field",), "a negative page_size"),
    Reason("PAGE_TOKEN_INVALID", "INVALID_ARGUMENT", ("field",), "a page_token this server did not issue"),
    Reason("PAGES_WITHOUT_END", "UNAVAILABLE", ("list",), "another server kept a list going past any list's end"),
    Reason("ENUM_VALUE_INVALID", "INVALID_ARGUMENT", ("field",), "a value that is not one of its enum's"),
    Reason("TIMESTAMP_INVALID", "INVALID_ARGUMENT", ("field",),
           "a timestamp outside 0001-01-01 to 9999-12-31, or with nanos out of range"),
    Reason("RESOURCE_NAME_INVALID", "INVALID_ARGUMENT", ("field",), "a resource name not of its form"),
    Reason("REASON_REQUIRED", "INVALID_ARGUMENT", ("field",), "a rejection, suspension or revocation without a reason"),
    # -- grants, policies and the owner's statements -------------------------------------------------------
    Reason("GRANT_NOT_FOUND", "PERMISSION_DENIED", ("grant",), "a grant unknown to the caller's department"),
    Reason("GRANT_NAME_INVALID", "INVALID_ARGUMENT", (), "a grant name no grant can have"),
    Reason("GRANT_NOT_ACTIVE", "FAILED_PRECONDITION", ("grant", "policy"),
           "a grant suspended, revoked, exhausted or outside its validity"),
    Reason("GRANT_DISTRICT_MISSING", "FAILED_PRECONDITION", ("grant",), "a grant that names no grantee district"),
    Reason("GRANT_DISTRICT_MISMATCH", "PERMISSION_DENIED", ("grant",), "a grant for another district than the token's"),
    Reason("QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", ("grant", "quota", "limit"),
           "a grant that has used its queries per day or in total"),
    Reason("POLICY_INVALID", "FAILED_PRECONDITION", ("path", "line"), "a policy file that does not parse or validate"),
    Reason("POLICY_SIGNATURE_INVALID", "PERMISSION_DENIED", ("policy", "key", "role"),
           "a policy whose approvals do not verify against the trusted keys"),
    Reason("POLICY_NOT_FOUND", "NOT_FOUND", ("policy",), "a policy that does not exist"),
    Reason("POLICY_EXISTS", "ALREADY_EXISTS", ("policy",), "a policy id the store holds already"),
    Reason("POLICY_EXPIRED", "FAILED_PRECONDITION", ("policy",), "an approval of a policy whose validity has ended"),
    Reason("STATEMENT_INVALID", "INVALID_ARGUMENT", ("field", "statement_field"),
           "an owner's statement that is malformed or not in canonical form"),
    Reason("STATEMENT_SIGNATURE_INVALID", "PERMISSION_DENIED", ("policy", "key"),
           "an owner's statement not signed by a key trusted for the owner role"),
    Reason("STATEMENT_REQUIRED", "INVALID_ARGUMENT", ("field", "policy"), "a revocation without the owner's statement"),
    Reason("STATEMENT_MISMATCH", "INVALID_ARGUMENT", ("field", "policy"),
           "a statement of another policy or version, or with another reason"),
    Reason("TRUST_NOT_CONFIGURED", "FAILED_PRECONDITION", (),
           "a broker without a trust file, asked to verify approvals or statements"),
    # -- the request workflow and its store ----------------------------------------------------------------
    Reason("ACCESS_REQUEST_NOT_FOUND", "NOT_FOUND", ("access_request",), "an access request that does not exist"),
    Reason("STATE_TRANSITION_INVALID", "FAILED_PRECONDITION", ("state", "action"),
           "an action the request's or policy's state does not allow"),
    Reason("CONCURRENT_CHANGE", "ABORTED", ("access_request", "policy"),
           "a request or policy that changed since it was read"),
    Reason("ALREADY_APPROVED", "FAILED_PRECONDITION", ("access_request",), "a second approval by one organisation"),
    Reason("STAGE_NOT_REACHED", "FAILED_PRECONDITION", ("access_request", "stage"),
           "an approval before the request reached its stage"),
    Reason("SIGNER_MISMATCH", "PERMISSION_DENIED", ("access_request",),
           "an approval signed for another stage or organisation"),
    Reason("OWN_DEPARTMENT_REQUEST", "PERMISSION_DENIED", ("access_request",),
           "a review of the reviewer's own department's request"),
    Reason("APPROVAL_DOCUMENT_INVALID", "INVALID_ARGUMENT", ("field",), "an approval document that does not read"),
    Reason("POLICY_NOT_A_NARROWING", "INVALID_ARGUMENT", ("field", "policy"),
           "an owner's policy that does not only narrow the draft"),
    Reason("DATASET_NOT_FOUND", "NOT_FOUND", ("table",), "a dataset no sandbox publishes"),
    Reason("DATASET_NOT_REQUESTABLE", "FAILED_PRECONDITION", ("table",),
           "a dataset its owner has not opened to requests"),
    Reason("COLUMN_NOT_IN_CATALOG", "INVALID_ARGUMENT", ("field", "table", "column"),
           "a requested column the catalog does not list"),
    Reason("COLUMN_LEVEL_NOT_ALLOWED", "INVALID_ARGUMENT", ("field", "table", "column"),
           "a column requested for a use its level does not allow"),
    Reason("PRODUCT_NOT_OFFERED", "INVALID_ARGUMENT", ("field", "table", "product"),
           "a product a request asks for that the dataset's catalog does not offer to requests"),
    Reason("PRODUCT_COLUMN_NOT_REQUESTED", "INVALID_ARGUMENT", ("field", "table", "product", "column"),
           "a product reading a column the request does not ask for at that level (or two products at odds)"),
    Reason("RESULT_MODE_UNSUPPORTED", "INVALID_ARGUMENT", ("field",), "a result mode this version does not offer"),
    Reason("STORE_UNAVAILABLE", "UNAVAILABLE", (), "the broker's state store cannot be reached or written"),
    # -- queries at the broker -----------------------------------------------------------------------------
    Reason("GUARD_TIMEOUT", "DEADLINE_EXCEEDED", ("rule",), "the caller's deadline passed while the guard checked"),
    Reason("QUERY_TIMEOUT", "DEADLINE_EXCEEDED", (), "the query ran past its deadline"),
    Reason("TOTALS_NEED_AUDIT", "FAILED_PRECONDITION", ("table", "construct"),
           "totals that are not a ROLLUP (CUBE, GROUPING SETS) where the owner turned the released-cell auditor off"),
    Reason("SANDBOX_UNAVAILABLE", "UNAVAILABLE", ("sandbox",), "the data owner's sandbox cannot be reached"),
    Reason("PARTITION_NOT_CONFIGURED", "FAILED_PRECONDITION", ("policy",),
           "a policy's partition the broker has no address for"),
    Reason("PARTITION_MISCONFIGURED", "FAILED_PRECONDITION", ("policy",),
           "a partition's address answered by another sandbox"),
    Reason("PARTITIONS_INCONSISTENT", "FAILED_PRECONDITION", ("policy",),
           "partitions' encrypted results that cannot be added up"),
    Reason("ENCRYPTED_TOO_MANY_GROUPS", "OUT_OF_RANGE", ("table",),
           "partitions holding more groups together than one ciphertext"),
    # -- the access log, its checkpoints and their witnesses -----------------------------------------------
    Reason("ACCESS_LOG_UNAVAILABLE", "UNAVAILABLE", (), "the access log cannot record the access, which is refused"),
    Reason("ACCESS_LOG_TAMPERED", "UNAVAILABLE", ("seq",),
           "the log holds records no trusted broker sealed, or lost records"),
    Reason("ACCESS_RECORD_NOT_FOUND", "NOT_FOUND", ("subject",), "an access record that does not exist"),
    Reason("WITNESS_REFUSED", "FAILED_PRECONDITION", (),
           "the sandbox will not witness a checkpoint (WitnessError's default)"),
    Reason("WITNESS_NOT_CONFIGURED", "FAILED_PRECONDITION", (), "a sandbox that pins no broker log key"),
    Reason("WITNESS_HISTORY_LOST", "FAILED_PRECONDITION", (), "a sandbox whose witness history is gone"),
    Reason("WITNESS_GAP", "FAILED_PRECONDITION", ("witnessed_size",),
           "a checkpoint after ones the sandbox has not witnessed yet"),
    Reason("WITNESS_LEDGER_UNAVAILABLE", "UNAVAILABLE", (), "the sandbox cannot record the checkpoint in its ledger"),
    Reason("CHECKPOINTS_INVALID", "INVALID_ARGUMENT", ("field",),
           "too few or too many checkpoints, or a consistency proof too long"),
    Reason("CHECKPOINT_INVALID", "INVALID_ARGUMENT", ("field",), "a checkpoint with a malformed field"),
    Reason("CHECKPOINT_NOT_TRUSTED", "PERMISSION_DENIED", ("size",),
           "a checkpoint not signed by a broker key the sandbox pins"),
    Reason("CHECKPOINT_FORK", "FAILED_PRECONDITION", ("size", "witnessed_size"),
           "a checkpoint that does not extend the ones witnessed: the log was rolled back or rewritten"),
    # -- products (dsbroker.policy.product_binding) ---------------------------------------------------------
    Reason("PRODUCT_NOT_GRANTED", "PERMISSION_DENIED", ("grant", "product"), "a product the grant does not hold"),
    Reason("PRODUCT_VERSION_MISMATCH", "FAILED_PRECONDITION", ("grant", "product", "version"),
           "a product version other than the one the grant holds"),
    Reason("PRODUCT_PARAMETER_MISSING", "INVALID_ARGUMENT", ("product", "parameter"), "a product parameter not given"),
    Reason("PRODUCT_PARAMETER_UNKNOWN", "INVALID_ARGUMENT", ("product", "parameter"),
           "a parameter the product does not declare"),
    Reason("PRODUCT_PARAMETER_INVALID", "INVALID_ARGUMENT", ("product", "parameter"),
           "a product parameter of the wrong type (not a date, not a whole number, a list member twice)"),
    Reason("PRODUCT_PARAMETER_OUT_OF_RANGE", "INVALID_ARGUMENT", ("product", "parameter"),
           "a product parameter outside its bounds, or a list longer than it takes"),
    Reason("PRODUCT_PARAMETER_NOT_ALLOWED", "INVALID_ARGUMENT", ("product", "parameter"),
           "a product parameter that is not one of the values it allows"),
    Reason("PRODUCT_CALL_INVALID", "INVALID_ARGUMENT", ("field",), "a query that gives both SQL and a product"),
    Reason("AD_HOC_QUERY_NOT_GRANTED", "PERMISSION_DENIED", ("grant",),
           "SQL of the caller's own under a grant that answers only its products (queries: products)"),
    Reason("PRODUCT_TEMPLATE_MISMATCH", "PERMISSION_DENIED", ("policy", "product"),
           "a product plan whose original SQL is not the signed template with its parameters bound"),
    # -- plans at the sandbox ------------------------------------------------------------------------------
    Reason("PLAN_INVALID", "INVALID_ARGUMENT", ("field",), "a plan field that is missing or malformed"),
    Reason("PLAN_NOT_GUARDED", "PERMISSION_DENIED", ("policy", "rule", "guard_reason"),
           "a plan that is not what the guard makes of the original SQL for its caller"),
    Reason("PLAN_CALLER_INVALID", "PERMISSION_DENIED", ("policy", "token_reason"),
           "a plan whose caller's token or certificate does not verify, or is no requester of the grantee"),
    Reason("PLAN_POLICY_MISMATCH", "PERMISSION_DENIED", ("policy", "table"),
           "a plan whose policy id, version or dataset is not its signed policy's"),
    Reason("PLAN_REPLAYED", "ALREADY_EXISTS", ("policy", "execution_id"), "an execution id the sandbox ran before"),
    Reason("DATASET_NOT_SERVED", "NOT_FOUND", ("table",), "a dataset this sandbox does not serve"),
    Reason("PARTITION_NOT_NAMED", "PERMISSION_DENIED", ("policy",),
           "a sandbox that is not one of the policy's partitions"),
    Reason("POLICY_REVOKED", "FAILED_PRECONDITION", ("policy", "version", "statement"),
           "a policy version its owner has revoked"),
    Reason("POLICY_SUPERSEDED", "FAILED_PRECONDITION", ("policy", "version", "newest_version"),
           "a policy version older than one the owner signed since"),
    Reason("POLICY_VERSION_REUSED", "FAILED_PRECONDITION", ("policy", "version"),
           "a policy version of which the owner signed two different bodies (a change signed without raising the "
           "version): refused at the broker and at a sandbox that has seen both, whichever body a plan carries"),
    Reason("POLICY_LEDGER_UNAVAILABLE", "UNAVAILABLE", (), "the sandbox cannot record the owner's statement"),
    Reason("EXECUTION_LEDGER_UNAVAILABLE", "UNAVAILABLE", (), "the sandbox cannot record the plan, which is not run"),
    Reason("RELEASED_CELLS_UNAVAILABLE", "UNAVAILABLE", (),
           "the sandbox cannot record the cells an answer releases, which is not released"),
    Reason("AUDIT_TOO_LARGE", "RESOURCE_EXHAUSTED", ("table",),
           "released cells too fine for the auditor to check within its memory"),
    Reason("AUDIT_REFUSED", "FAILED_PRECONDITION", ("table",),
           "an answer that, with cells released before, would reveal a total of too few entities"),
    Reason("LOOKUP_NOT_SERVED", "FAILED_PRECONDITION", ("policy", "table", "column"),
           "a grant's lookup this sandbox does not serve"),
    Reason("LOOKUP_INVALID", "FAILED_PRECONDITION", ("policy", "table", "column"),
           "a grant's lookup without its key or columns"),
    Reason("LOOKUP_KEY_NOT_UNIQUE", "FAILED_PRECONDITION", ("policy", "table", "column"),
           "a lookup whose key is not unique in it"),
    Reason("ENGINE_NOT_LOCKED_DOWN", "INTERNAL", (), "an engine connection whose lockdown settings do not hold"),
    Reason("DATA_FILE_MISSING", "INTERNAL", (), "the sandbox's data file does not exist"),
    Reason("ENGINE_UNREACHABLE", "UNAVAILABLE", (), "the sandbox cannot connect to its database server"),
    Reason("SANDBOX_BUSY", "RESOURCE_EXHAUSTED", (), "the sandbox has no engine connection free"),
    Reason("QUERY_OUT_OF_MEMORY", "RESOURCE_EXHAUSTED", ("memory_limit",),
           "a query needing more memory than the engine's memory_limit (spilling to disk is refused)"),
    Reason("EXECUTION_FAILED", "INTERNAL", ("error_class",), "the engine failed (the message is generic on purpose)"),
    Reason("GROUPS_TOO_MANY", "OUT_OF_RANGE", ("table",),
           "more groups before HAVING or ORDER BY than the sandbox reads"),
    Reason("TOTALS_TOO_LARGE", "OUT_OF_RANGE", ("table",), "a table with totals too large to protect whole"),
    Reason("OUTER_QUERY_FAILED", "OUT_OF_RANGE", ("table",),
           "the outer query of two levels failed on the released cells (an overflow); the message is generic"),
    Reason("NOISE_NOT_SERVED", "FAILED_PRECONDITION", ("policy",),
           "a noise policy at a sandbox without a privacy ledger"),
    Reason("NOISE_TOO_MANY_CELLS", "OUT_OF_RANGE", ("table",), "more cells before the noisy threshold than allowed"),
    Reason("PRIVACY_BUDGET_EXHAUSTED", "RESOURCE_EXHAUSTED", ("policy", "epsilon_spent", "epsilon_budget"),
           "a grant's privacy budget (its share of the dataset's) that cannot pay for another query"),
    Reason("DATASET_BUDGET_EXHAUSTED", "RESOURCE_EXHAUSTED", ("table", "epsilon_spent", "epsilon_budget"),
           "a dataset's privacy budget, spent by all its noise grants together, that cannot pay for another query"),
    Reason("PRIVACY_LEDGER_TAMPERED", "FAILED_PRECONDITION", ("policy",),
           "a privacy ledger changed by someone without its key"),
    Reason("ENCRYPTION_KEY_NOT_BOUND", "PERMISSION_DENIED", ("policy", "key_id"),
           "an encryption key the caller did not sign for this query"),
    Reason("ENCRYPTION_KEY_INVALID", "INVALID_ARGUMENT", (), "a public context this version does not encrypt under"),
    Reason("ENCRYPTION_KEY_PRIVATE", "INVALID_ARGUMENT", (), "a public context that holds a secret key"),
    Reason("ENCRYPTED_NOT_INTEGER", "INVALID_ARGUMENT", ("table", "column"), "an encrypted measure that is not whole"),
    Reason("ENCRYPTED_OVERFLOW", "OUT_OF_RANGE", ("table", "column"),
           "a cell beyond what an encrypted result holds exactly"),
    Reason("PARTITION_GROUPS_INVALID", "INVALID_ARGUMENT", (), "the broker's union of groups does not fit this result"),
    Reason("PARTITION_EXECUTION_UNKNOWN", "NOT_FOUND", (), "no encrypted cells wait for that execution here"),
    # -- the requester's SDK -------------------------------------------------------------------------------
    Reason("ENCRYPTION_KEY_UNREADABLE", "FAILED_PRECONDITION", (),
           "an encryption key file that cannot be read, or whose public half is not its own"),
    Reason("ENCRYPTION_KEY_MISMATCH", "FAILED_PRECONDITION", ("key_id",), "a result encrypted under another key"),
    Reason("ENCRYPTED_RESULT_INVALID", "DATA_LOSS", (), "an encrypted result that does not decrypt as one"),
)

REASONS: dict[str, Reason] = {}
for _reason in REASONS_DECLARED:
    if _reason.name in REASONS:
        raise ValueError(f"reason {_reason.name} is declared twice")
    REASONS[_reason.name] = _reason
del _reason
GUARD_REASONS = frozenset(reason.name for reason in GUARD_REFUSALS)


def code_of(reason: str, error_class: type[DsbrokerError] = DsbrokerError) -> str:
    """The name of the status code of ``reason``; for a reason the registry lacks (never raised here, the tests
    see to that), its class's default reason's, and INTERNAL at last."""
    entry = REASONS.get(reason) or REASONS.get(error_class.reason) or REASONS["INTERNAL"]
    return entry.code
