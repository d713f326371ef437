"""Request fields are checked where they come in (dsbroker/rpc/request_fields.py): every field of every method of
every service, set to what no client of ours sends, is answered with a status that says what is wrong with
it, never INTERNAL; free text is bounded before it is stored; the servers keep serving. Real servers on
port 0, real DuckDB and SQLite."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import descriptor, symbol_database
from google.rpc import error_details_pb2

from dsbroker.errors import DsbrokerError
from dsbroker.rpc.pagination import Pages
from dsbroker.rpc.request_fields import (INT64_MAX, MAX_TEXT, RequestFieldError, bounded_text, enum_value, resource_id,
                                   resource_number)
from dsbroker.rpc.status import error_from_rpc_error
from broker.server import start_broker
from dsbroker.identity.tls import open_channel
from broker.v1 import (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
                       query_service_pb2)
from sandbox.v1 import sandbox_service_pb2
from tests.conftest import GRANT, broker_settings_for, client_tls, sandbox_client_tls, token_for
from tests.test_attack_sandbox import SQL, honest_plan

EVERY_ROLE = ("requester", "reviewer", "owner", "auditor")
BROKER_SERVICES = (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
                   query_service_pb2)
HOSTILE_TEXT = ("\u00b2", "x" * (MAX_TEXT + 1), "9" * 30, "accessRequests/\u00b2", "accessRecords/" + "9" * 30, "\x00",
                "e30=", "WzAsMF0=")
HOSTILE_NUMBERS = {descriptor.FieldDescriptor.TYPE_INT32: (-1, 2 ** 31 - 1, -2 ** 31),
                   descriptor.FieldDescriptor.TYPE_INT64: (-1, INT64_MAX, -INT64_MAX - 1),
                   descriptor.FieldDescriptor.TYPE_ENUM: (99, -1),
                   descriptor.FieldDescriptor.TYPE_BOOL: (True,),
                   descriptor.FieldDescriptor.TYPE_BYTES: (b"\xff" * 100,),
                   descriptor.FieldDescriptor.TYPE_DOUBLE: (float("nan"), -1.0, 1e308)}
HOSTILE_TIMES = ((10 ** 12, 0), (1, -5), (-10 ** 12, 0), (0, 10 ** 9))
# Requests that get past the first check only when the rest of them is right: each field is varied alone.
BASES = {
    "sandbox.v1.Plan": lambda: honest_plan(),
    "broker.v1.RunQueryRequest": lambda: query_service_pb2.RunQueryRequest(policy=f"policies/{GRANT}", sql=SQL),
    "broker.v1.ExplainQueryRequest": lambda: query_service_pb2.ExplainQueryRequest(policy=f"policies/{GRANT}",
                                                                                          sql=SQL),
}


def _message(full_name: str):
    return symbol_database.Default().GetSymbol(full_name)


def variants(cls, depth: int = 0):
    """(label, request) pairs: ``cls``'s base request with one field, at any depth up to 2, set hostile."""
    def base():
        made = BASES[cls.DESCRIPTOR.full_name]() if cls.DESCRIPTOR.full_name in BASES else cls()
        if cls.DESCRIPTOR.full_name == "sandbox.v1.Plan":
            made.execution_id = str(uuid.uuid4())  # a fresh id each, so no variant is merely a replay
        return made

    for field in cls.DESCRIPTOR.fields:
        if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            # A map (a product call's parameters): hostile text as a key and as a value, alone and together.
            for value in HOSTILE_TEXT:
                for key, text in (("period", value), (value, "2025-06-01"), (value, value)):
                    made = base()
                    getattr(made, field.name)[key] = text
                    yield f"{field.name}[{str(key)[:12]!r}]={str(text)[:12]!r}", made
            continue
        if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                for seconds, nanos in HOSTILE_TIMES:
                    made = base()
                    getattr(made, field.name).seconds, getattr(made, field.name).nanos = seconds, nanos
                    yield f"{field.name}=Timestamp({seconds}, {nanos})", made
            elif depth < 2:
                for label, inner in variants(_message(field.message_type.full_name), depth + 1):
                    made = base()
                    if field.is_repeated:
                        getattr(made, field.name).add().CopyFrom(inner)
                    else:
                        getattr(made, field.name).CopyFrom(inner)
                    yield f"{field.name}.{label}", made
            continue
        hostile = HOSTILE_TEXT if field.type == descriptor.FieldDescriptor.TYPE_STRING else HOSTILE_NUMBERS.get(
            field.type, ())
        for value in hostile:
            made = base()
            if field.is_repeated:
                del getattr(made, field.name)[:]
                getattr(made, field.name).extend([value] * 3)
            else:
                setattr(made, field.name, value)
            yield f"{field.name}={str(value)[:24]!r}", made


def sweep(port: int, tls, modules, metadata) -> tuple[list[str], list[str]]:
    """Call every method of ``modules``' services with every variant; returns the calls answered INTERNAL or
    UNKNOWN, and the INVALID_ARGUMENT answers that named a field in their ErrorInfo but brought no BadRequest."""
    crashed, unnamed = [], []
    with open_channel(f"127.0.0.1:{port}", tls=tls, options=[]) as channel:
        for module in modules:
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    stub = channel.unary_unary(f"/{service.full_name}/{method.name}",
                                               request_serializer=lambda m: m.SerializeToString(),
                                               response_deserializer=lambda b: b)
                    for label, request in variants(_message(method.input_type.full_name)):
                        try:
                            stub(request, metadata=metadata, timeout=30)
                        except grpc.RpcError as rpc_error:
                            error = error_from_rpc_error(rpc_error)
                            if error.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                                crashed.append(f"{method.name} {label}: {error.code.name}")
                            elif (error.code == grpc.StatusCode.INVALID_ARGUMENT and "field" in error.metadata
                                  and not any(isinstance(d, error_details_pb2.BadRequest) for d in error.details)):
                                unnamed.append(f"{method.name} {label}: {error.reason}")
    return crashed, unnamed


@pytest.fixture(scope="module")
def own_broker(sandbox, tmp_path_factory):
    running = start_broker(broker_settings_for(sandbox.port, tmp_path_factory.mktemp("fields") / "log.sqlite"))
    yield running
    running.stop()


def test_no_field_of_any_broker_method_makes_it_answer_internal(own_broker):
    token = token_for(roles=EVERY_ROLE)
    crashed, unnamed = sweep(own_broker.port, client_tls(), BROKER_SERVICES, [("authorization", f"Bearer {token}")])
    assert crashed == [] and unnamed == []
    with open_channel(f"127.0.0.1:{own_broker.port}", tls=client_tls(), options=[]) as channel:
        from broker.v1 import catalog_service_pb2_grpc

        listed = catalog_service_pb2_grpc.CatalogServiceStub(channel).ListDatasets(
            catalog_service_pb2.ListDatasetsRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10)
    assert listed.datasets, "the broker keeps serving"


def test_no_field_of_any_sandbox_method_makes_it_answer_internal(sandbox):
    crashed, unnamed = sweep(sandbox.port, sandbox_client_tls(), (sandbox_service_pb2,), None)
    assert crashed == [] and unnamed == []
    with open_channel(f"127.0.0.1:{sandbox.port}", tls=sandbox_client_tls(), options=[]) as channel:
        from sandbox.v1 import sandbox_service_pb2_grpc

        response = sandbox_service_pb2_grpc.SandboxServiceStub(channel).ExecutePlan(
            sandbox_service_pb2.ExecutePlanRequest(plan=honest_plan()), timeout=30)
    assert response.table.row_count > 0, "the sandbox keeps serving"


# -- the helpers, one rule each ------------------------------------------------------------------------

def refusal(check, *args, **kwargs) -> DsbrokerError:
    with pytest.raises(RequestFieldError) as caught:
        check(*args, **kwargs)
    return caught.value


def test_free_text_is_bounded_and_the_refusal_names_the_field_without_the_value():
    assert bounded_text("  why  ", "reason") == "why"
    assert bounded_text("x" * MAX_TEXT, "reason") == "x" * MAX_TEXT
    error = refusal(bounded_text, "y" * (MAX_TEXT + 1), "comment")
    assert (error.code, error.reason, error.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_TOO_LONG",
                                                                   "comment")
    assert "yyy" not in error.message
    assert [v.field for d in error.rich_details() for v in d.field_violations] == ["comment"]
    assert refusal(bounded_text, " ", "reason", required=True).reason == "FIELD_REQUIRED"


RECORDS = Pages("accessRecords", (int,), default_size=50, max_size=500)
REQUESTS = Pages("accessRequests", (str, str), default_size=50, max_size=500)
NO_FIELDS = RECORDS.read(0, "").query


@pytest.mark.parametrize("token", ["\u00b2", "9" * 30, "9" * 5000, "e30=", "WzEsMl0=", "WyJhIl0=", "Wy0xXQ==",
                                   "nonsense!", RECORDS.token((INT64_MAX + 1,), NO_FIELDS),
                                   RECORDS.token((True,), NO_FIELDS), RECORDS.token(("x" * 300,), NO_FIELDS),
                                   RECORDS.token((7, 8), NO_FIELDS), RECORDS.token((7,), NO_FIELDS) + "x",
                                   Pages("checkpoints", (int,), 50, 500).token((7,), NO_FIELDS),
                                   RECORDS.token((7,), RECORDS.read(0, "", "other filters").query)],
                         ids=lambda token: token[:24])
def test_a_page_token_this_server_did_not_issue_for_this_list_is_refused(token):
    error = refusal(RECORDS.read, 0, token)
    assert (error.reason, error.metadata["field"]) == ("PAGE_TOKEN_INVALID", "page_token")
    assert token not in error.message


def test_a_page_token_reads_back_where_the_page_ended_for_the_same_list_and_filters():
    page = RECORDS.read(2, "", "allow")
    items, token = page.cut([4, 5, 6], key=lambda seq: (seq,))
    assert (page.size, page.limit, page.after, items) == (2, 3, None, [4, 5])
    assert RECORDS.read(2, token, "allow").after == (5,)
    assert refusal(RECORDS.read, 2, token, "deny").reason == "PAGE_TOKEN_INVALID"  # another filter: another list
    assert page.cut([4, 5], key=lambda seq: (seq,)) == ([4, 5], "")  # nothing follows: no token
    later = REQUESTS.read(0, REQUESTS.token(("2026-11-21T08:00:00+00:00", "req-abc"), REQUESTS.read(0, "").query))
    assert later.after == ("2026-11-21T08:00:00+00:00", "req-abc")
    assert RECORDS.read(0, "").size == 50 and RECORDS.read(10_000, "").size == 500
    assert refusal(RECORDS.read, -1, "").metadata["field"] == "page_size"


@pytest.mark.parametrize("name", ["accessRecords/\u00b2", "accessRecords/" + "9" * 30, "accessRecords/0",
                                  "accessRecords/-1", "accessRecords/01", "accessRecords/", "accessRecords/1 "])
def test_a_record_name_that_is_no_number_in_range_is_refused(name):
    assert refusal(resource_number, name, "accessRecords").reason == "RESOURCE_NAME_INVALID"


def test_names_and_enums_in_range_are_read():
    assert resource_number("accessRecords/9223372036854775807", "accessRecords") == INT64_MAX
    assert resource_id("policies/xuanwu-fgw-2026-007", "policies") == "xuanwu-fgw-2026-007"
    assert refusal(resource_id, "policies/\u00b2", "policies").reason == "RESOURCE_NAME_INVALID"
    # One name per resource: a bare id or number is not one.
    assert refusal(resource_id, "xuanwu-fgw-2026-007", "policies").reason == "RESOURCE_NAME_INVALID"
    assert refusal(resource_number, "9", "accessRecords").reason == "RESOURCE_NAME_INVALID"
    states = access_request_service_pb2.AccessRequestState.DESCRIPTOR
    assert enum_value(3, states, "state") == 3
    assert refusal(enum_value, 99, states, "state").reason == "ENUM_VALUE_INVALID"
