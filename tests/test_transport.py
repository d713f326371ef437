"""Transport and gRPC conventions on real servers: mutual TLS, identity through the broker, deadlines,
request ids, rich error details, per-caller limits, reflection and health."""

from __future__ import annotations

import threading

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from broker.access_log.log import AccessLog
from broker.client.sdk import BrokerClient
from dsbroker.errors import ConfigError, DsbrokerError
from broker.dev.keys import sandbox_settings
from dsbroker.rpc.status import error_from_rpc_error
from broker.server import start_broker
from broker.settings import BrokerSettings
from sandbox.settings import SandboxSettings
from dsbroker.identity.tls import ClientTls, open_channel
from broker.v1 import query_service_pb2 as pb
from broker.v1 import query_service_pb2_grpc as pb_grpc
from sandbox.server import start_sandbox
from sandbox.v1 import sandbox_service_pb2 as sandbox_pb
from sandbox.v1 import sandbox_service_pb2_grpc as sandbox_pb_grpc
from tests.test_tokens import claims, signed
from tests.conftest import shared_data
from tests.conftest import (ANALYST, GRANT, POLICIES, broker_settings_for, client_tls, dev_keys, sandbox_client_tls,
                            sign, token_for)

COUNT_SQL = "SELECT COUNT(*) AS c FROM tax.declarations"


def target(running) -> str:
    return f"127.0.0.1:{running.port}"


def call_fails_to_connect(address: str, tls: ClientTls | None) -> grpc.RpcError:
    with open_channel(address, tls=tls, options=[]) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return caught.value


def test_mutual_tls_lets_a_certified_client_in(client):
    assert client.query(GRANT, COUNT_SQL).rows[0][0] > 0


@pytest.mark.parametrize("tls_of", [
    pytest.param(lambda k: ClientTls(str(k.platform_ca)), id="no client certificate"),
    pytest.param(lambda k: ClientTls(str(k.platform_ca), str(k.broker_to_sandbox_cert), str(k.broker_to_sandbox_key)),
                 id="certificate from another CA"),
    pytest.param(lambda k: ClientTls(str(k.owner_ca), str(k.client_cert(ANALYST)), str(k.client_key(ANALYST))),
                 id="broker not trusted by the client"),
])
def test_the_broker_refuses_the_handshake_without_a_certificate_from_its_ca(broker, tls_of):
    error = call_fails_to_connect(target(broker), tls_of(dev_keys()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_to_a_tls_broker_fails(broker):
    assert call_fails_to_connect(target(broker), None).code() == grpc.StatusCode.UNAVAILABLE


def test_a_departments_certificate_opens_nothing_at_the_sandbox(sandbox):
    # Department certificates come from the platform CA; the sandbox trusts only the owner CA's broker certificate.
    assert call_fails_to_connect(target(sandbox), client_tls()).code() == grpc.StatusCode.UNAVAILABLE
    with open_channel(target(sandbox), tls=sandbox_client_tls(), options=[]) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_sandbox_refuses_a_plan_without_a_deadline(sandbox):
    with open_channel(target(sandbox), tls=sandbox_client_tls(), options=[]) as channel:
        stub = sandbox_pb_grpc.SandboxServiceStub(channel)
        plan = sandbox_pb.Plan(dataset="tax.declarations", sql="SELECT 1", max_rows=1)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ExecutePlan(sandbox_pb.ExecutePlanRequest(plan=plan))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("settings, message", [
    (dict(listen="0.0.0.0:0", plaintext=True), "loopback"),
    (dict(listen="127.0.0.1:0"), "tls_cert and tls_key"),
    (dict(listen="127.0.0.1:0", plaintext=True, tls_cert="x.pem", tls_key="x.key"), "not both"),
    (dict(listen="127.0.0.1:0", tls_cert="/nonexistent/cert.pem", tls_key="/nonexistent/key.pem"), "cannot read"),
])
def test_bad_transport_settings_stop_the_broker_with_a_clear_message(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        start_broker(BrokerSettings(jwks=str(dev_keys().jwks), jwt_issuer="x", access_log=str(tmp_path / "l"),
                                    policies=str(POLICIES), sandbox_plaintext=True, **settings))


def test_the_sandbox_requires_a_client_ca_with_tls(demo_db):
    keys = sandbox_settings(dev_keys())
    with pytest.raises(ConfigError, match="tls_client_ca"):
        start_sandbox(SandboxSettings(listen="127.0.0.1:0", **shared_data(demo_db), tls_cert=keys["tls_cert"],
                                      tls_key=keys["tls_key"]))


@pytest.mark.parametrize("overrides, message", [
    (dict(jwks=""), "jwks"),
    (dict(jwt_issuer=""), "jwt_issuer"),
    (dict(jwt_algorithms=("HS256",)), "jwt_algorithms"),
    (dict(token_binding="sometimes"), "token_binding"),
    (dict(tls_client_ca="", token_binding="subject"), "tls_client_ca"),
    (dict(sandbox_ca=""), "sandbox_ca"),
])
def test_bad_identity_settings_stop_the_broker(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        start_broker(broker_settings_for(0, tmp_path / "log.sqlite", **overrides))


def test_plaintext_channels_go_to_loopback_only():
    with pytest.raises(ConfigError, match="loopback"):
        open_channel("broker.example.com:443", tls=None, options=[])


def raw_call(broker, *, metadata=(), timeout: float | None = 10, sql: str = COUNT_SQL):
    with open_channel(target(broker), tls=client_tls(), options=[]) as channel:
        stub = pb_grpc.QueryServiceStub(channel)
        return stub.RunQuery.with_call(pb.RunQueryRequest(policy=f"policies/{GRANT}", sql=sql), timeout=timeout,
                                       metadata=(("authorization", f"Bearer {token_for()}"), *metadata))


def test_a_call_without_a_deadline_is_refused_with_bad_request(broker):
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(broker, timeout=None)
    error = error_from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DEADLINE_REQUIRED")
    assert [d.field_violations[0].field for d in error.details] == ["deadline"]
    log = AccessLog(broker.access_log_path)
    last = list(log.records())[-1]
    log.close()
    assert (last.event, last.decision, last.reason) == ("call.refused", "deny", "DEADLINE_REQUIRED")
    assert last.detail["method"] == "/broker.v1.QueryService/RunQuery"


def test_the_request_id_comes_back_and_lands_in_the_access_log(broker):
    _, call = raw_call(broker, metadata=(("x-request-id", "report-2026-11:q7"),))
    assert ("x-request-id", "report-2026-11:q7") in tuple(call.initial_metadata())
    log = AccessLog(broker.access_log_path)
    ours = [r for r in log.records() if r.request_id == "report-2026-11:q7"]
    log.close()
    assert [r.event for r in ours] == ["query.decision", "query.result"]


def test_a_request_id_is_made_up_when_none_is_sent(broker):
    _, call = raw_call(broker)
    sent = dict(call.initial_metadata())["x-request-id"]
    assert len(sent) == 36


def test_a_malformed_request_id_is_refused(broker):
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(broker, metadata=(("x-request-id", "bad id with spaces"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_guard_refusals_carry_a_bad_request_detail(client):
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, "SELECT vat_paid FROM tax.declarations")
    (bad_request,) = caught.value.details
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert bad_request.field_violations[0].field == "sql"


def test_a_grant_outside_its_validity_carries_a_precondition_failure(tmp_path, sandbox):
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (POLICIES / f"{GRANT}.yaml").read_text().replace("valid_from: 2026-01-01, valid_until: 2027-06-30",
                                                             "valid_from: 2099-01-01, valid_until: 2099-12-31")
    (policies / f"{GRANT}.yaml").write_text(sign(text))
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=str(policies)))
    try:
        with BrokerClient(target(running), token=token_for(), tls=client_tls()) as client:
            with pytest.raises(DsbrokerError) as caught:
                client.query(GRANT, COUNT_SQL)
    finally:
        running.stop()
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "GRANT_NOT_ACTIVE")
    (failure,) = error.details
    assert failure.violations[0].subject == f"policies/{GRANT}" and "2099-01-01" in failure.violations[0].description


def test_a_caller_without_the_requester_role_is_denied_and_logged(broker):
    with BrokerClient(target(broker), token=token_for(roles=("auditor",)), tls=client_tls()) as auditor:
        with pytest.raises(DsbrokerError) as caught:
            auditor.query(GRANT, COUNT_SQL)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    log = AccessLog(broker.access_log_path)
    last = list(log.records())[-1]
    log.close()
    assert (last.event, last.decision, last.reason) == ("query.decision", "deny", "ROLE_REQUIRED")


def test_forged_tokens_through_the_broker_are_unauthenticated_and_logged(broker):
    forged = signed(claims(), ed25519.Ed25519PrivateKey.generate())
    with BrokerClient(target(broker), token=forged, tls=client_tls()) as intruder:
        with pytest.raises(DsbrokerError) as caught:
            intruder.query(GRANT, COUNT_SQL, request_id="forged-1")
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    log = AccessLog(broker.access_log_path)
    record = [r for r in log.records() if r.request_id == "forged-1"]
    log.close()
    assert [(r.event, r.reason) for r in record] == [("auth.failure", "TOKEN_INVALID")]


@pytest.fixture
def bound_broker(sandbox, tmp_path):
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", token_binding="subject"))
    yield running
    running.stop()


def test_with_subject_binding_a_token_works_only_with_its_holders_certificate(bound_broker):
    with BrokerClient(target(bound_broker), token=token_for(), tls=client_tls(ANALYST)) as holder:
        assert holder.query(GRANT, COUNT_SQL).rows
    with BrokerClient(target(bound_broker), token=token_for(), tls=client_tls("other-analyst")) as thief:
        with pytest.raises(DsbrokerError) as caught:
            thief.query(GRANT, COUNT_SQL)
    assert caught.value.reason == "TOKEN_CERTIFICATE_MISMATCH"


def test_one_caller_cannot_take_every_worker(sandbox, tmp_path, monkeypatch):
    import broker.query.pipeline as pipeline

    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", max_calls_per_caller=1))
    inside, release = threading.Event(), threading.Event()
    original = pipeline.QueryPipeline.run

    def held(self, principal, *args, **kwargs):
        if principal.subject == ANALYST:
            inside.set()
            release.wait(10)
        return original(self, principal, *args, **kwargs)

    monkeypatch.setattr(pipeline.QueryPipeline, "run", held)
    try:
        with BrokerClient(target(running), token=token_for(), tls=client_tls()) as busy, \
                BrokerClient(target(running), token=token_for(subject="other-analyst"),
                             tls=client_tls("other-analyst")) as other:
            first = threading.Thread(target=busy.query, args=(GRANT, COUNT_SQL))
            first.start()
            assert inside.wait(10)
            with pytest.raises(DsbrokerError) as caught:
                busy.query(GRANT, COUNT_SQL)
            assert other.query(GRANT, COUNT_SQL).rows, "another caller is not affected"
            release.set()
            first.join(10)
            assert busy.query(GRANT, COUNT_SQL).rows, "the cap frees up when the call ends"
    finally:
        release.set()
        running.stop()
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CALLS")
    (quota,) = error.details
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == f"callers/xuanwu-fgw/{ANALYST}"
    log = AccessLog(tmp_path / "log.sqlite")
    refused = [(r.event, r.subject, r.reason) for r in log.records() if r.event == "call.refused"]
    log.close()
    assert refused == [("call.refused", ANALYST, "TOO_MANY_CALLS")]


def list_services(running) -> list[str]:
    with open_channel(target(running), tls=client_tls(), options=[]) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=5)
        return [service.name for reply in replies for service in reply.list_services_response.service]


def test_reflection_is_off_unless_configured(broker, sandbox, tmp_path):
    with pytest.raises(grpc.RpcError) as caught:
        list_services(broker)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", reflection=True))
    try:
        assert "broker.v1.QueryService" in list_services(running)
    finally:
        running.stop()


def test_health_reports_not_serving_while_shutting_down(sandbox, tmp_path):
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite"))
    with open_channel(target(running), tls=client_tls(), options=[]) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="broker.v1.QueryService"), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        threading.Thread(target=running.stop, daemon=True).start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_certificate_once_certified_is_refused_outside_its_validity_and_a_stranger_never_passes(tmp_path):
    """The sandbox keeps the certificate paths it validated; keeping them must not stretch a validity."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from broker.dev.keys import init_keys
    from dsbroker.identity.tls import CertificateAuthorities, certificate_from_der

    keys = dev_keys()
    authorities = CertificateAuthorities(keys.platform_ca)
    der = x509.load_pem_x509_certificate(keys.client_cert(ANALYST).read_bytes()).public_bytes(Encoding.DER)
    analyst = certificate_from_der(der)
    leaf = x509.load_der_x509_certificate(der)
    assert authorities.certifies(analyst)
    assert authorities.certifies(analyst)  # the kept path
    assert not authorities.certifies(analyst, now=leaf.not_valid_after_utc + dt.timedelta(seconds=1))
    assert not authorities.certifies(analyst, now=leaf.not_valid_before_utc - dt.timedelta(seconds=1))
    assert authorities.certifies(analyst)
    other = init_keys(tmp_path / "other", clients=(ANALYST,))  # the same name under another CA
    stranger_pem = other.client_cert(ANALYST).read_bytes()
    stranger = certificate_from_der(x509.load_pem_x509_certificate(stranger_pem).public_bytes(Encoding.DER))
    assert not authorities.certifies(stranger)
    assert not authorities.certifies(stranger)
