"""Encrypted results and secure sums, end to end: real sandboxes (three partitions), a real broker, real TenSEAL.

The sandboxes here serve plaintext gRPC on loopback behind recording TCP proxies, so a test can read
every byte the broker received from them.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from pathlib import Path

import duckdb
import grpc
import pytest
import tenseal as ts
from click.testing import CliRunner

from broker.access_log.store import RecordFilter, open_log_store
from broker.cli.main import main
from broker.client.sdk import BrokerClient
from broker.client.encryption_key import EncryptionKey
from dsbroker.errors import DsbrokerError
from broker.dev.keys import sandbox_settings
from dsbroker.policy.model import parse_policy
from dsbroker.rpc.status import error_from_rpc_error
from broker.server import start_broker
from broker.v1 import query_service_pb2 as query_pb
from dsbroker.results import bfv
from dsbroker.results.parameters import EXACT_LIMIT
from sandbox.demo.data import DEMO_DATASETS, split_demo_data
from sandbox.server import start_sandbox
from sandbox.settings import SandboxSettings
from tests.conftest import shared_data
from tests.conftest import (DISCLOSURE, ENCRYPTED, GRANT, XUANWU, broker_settings_for, client_tls, declarations_file,
                            dev_keys, shipped_grant_text, sign, token_for)

PARTITIONED = "xuanwu-fgw-2026-008"
PARTITIONS = ("part-a", "part-b", "part-c")
NOISY = "xuanwu-fgw-2026-009"
CELLS_SQL = ("SELECT street_code, industry_section, COUNT(*) AS declarations, "
             "COUNT(DISTINCT taxpayer_id) AS taxpayers, SUM(revenue) AS revenue, AVG(vat_paid) AS mean_vat "
             "FROM tax.declarations GROUP BY street_code, industry_section")
SECTIONS_SQL = ("SELECT industry_section, size_class, COUNT(*) AS declarations, SUM(vat_paid) AS vat, "
                "AVG(revenue) AS mean_revenue FROM tax.declarations GROUP BY industry_section, size_class")


class RecordingProxy:
    """A TCP proxy on a free loopback port that forwards to ``target`` and keeps every byte sent back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.received = bytearray()  # what the proxy's clients (the broker) received
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self.received.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def plaintext_sandbox(data: Path, sandbox_id: str, ledger: Path, datasets: tuple[str, ...] = DEMO_DATASETS):
    settings = {**sandbox_settings(dev_keys()), "tls_cert": "", "tls_key": "", "tls_client_ca": "", "plaintext": True}
    return start_sandbox(SandboxSettings(listen="127.0.0.1:0", **shared_data(data), sandbox_id=sandbox_id,
                                         execution_ledger=str(ledger), datasets=datasets, **settings))


def encrypted_policies(directory: Path) -> Path:
    """The shipped grant allowing encrypted results too, and a grant over three partitions (encrypted only),
    both with the dominance rule off (encrypted results are not served under it); and a noise grant."""
    waived = shipped_grant_text(without_dominance=ENCRYPTED)
    assert "results: [aggregate]" in waived
    directory.mkdir()
    (directory / f"{GRANT}.yaml").write_text(sign(waived.replace("results: [aggregate]",
                                                                 "results: [aggregate, encrypted]")))
    partitioned = waived.replace(f"id: {GRANT}", f"id: {PARTITIONED}").replace(
        "results: [aggregate]", f"results: [encrypted]\npartitions: [{', '.join(PARTITIONS)}]")
    (directory / f"{PARTITIONED}.yaml").write_text(sign(partitioned))
    # A noise grant has no dominance rule (clipping bounds what one taxpayer adds), so nothing to turn off.
    noisy = shipped_grant_text().replace(f"id: {GRANT}", f"id: {NOISY}").replace(
        "results: [aggregate]", "results: [aggregate, encrypted]").replace(
        DISCLOSURE, "disclosure: {min_entities: 10, noise: {epsilon: 1.0, budget: 1000, "
                    "bounds: {vat_paid: [0, 100000000]}, rows_per_entity: 24}}")
    (directory / f"{NOISY}.yaml").write_text(sign(noisy))
    return directory


class Deployment:
    """A broker, its sandbox and three partition sandboxes, each sandbox behind a recording proxy."""

    def __init__(self, demo_db: Path, state: Path) -> None:
        self.partition_files = split_demo_data(demo_db, list(PARTITIONS), state / "partitions")
        self.sandboxes = [plaintext_sandbox(demo_db, "whole", state / "whole-executions.sqlite")]
        self.sandboxes += [plaintext_sandbox(path, name, state / f"{name}-executions.sqlite")
                           for name, path in zip(PARTITIONS, self.partition_files, strict=True)]
        self.proxies = [RecordingProxy(running.port) for running in self.sandboxes]
        self.access_log = state / "access-log.sqlite"
        self.broker = start_broker(broker_settings_for(
            self.proxies[0].port, self.access_log, policies=str(encrypted_policies(state / "policies")),
            sandbox_plaintext=True, sandbox_ca="", sandbox_cert="", sandbox_key="",
            partitions=tuple(f"{name}=127.0.0.1:{proxy.port}"
                             for name, proxy in zip(PARTITIONS, self.proxies[1:], strict=True))))

    def client(self) -> BrokerClient:
        return BrokerClient(f"127.0.0.1:{self.broker.port}", token=token_for(), tls=client_tls())

    def received(self) -> bytes:
        return b"".join(bytes(proxy.received) for proxy in self.proxies)

    def clear(self) -> None:
        for proxy in self.proxies:
            proxy.clear()

    def stop(self) -> None:
        self.broker.stop()
        for running, proxy in zip(self.sandboxes, self.proxies, strict=True):
            running.stop()
            proxy.close()


@pytest.fixture(scope="module")
def deployment(demo_db, tmp_path_factory):
    running = Deployment(demo_db, tmp_path_factory.mktemp("encrypted"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def key() -> EncryptionKey:
    return EncryptionKey.generate()


def by_keys(columns, rows, width):
    return {tuple(row[:width]): dict(zip(columns[width:], row[width:], strict=True)) for row in rows}


def test_encrypted_cells_equal_the_plaintext_cells_one_by_one(deployment, key):
    with deployment.client() as client:
        plain = client.query(GRANT, CELLS_SQL)
        encrypted = client.query(GRANT, CELLS_SQL, encryption_key=key)
    assert encrypted.columns == plain.columns
    assert encrypted.encryption["key_id"] == key.key_id and encrypted.encryption["partitions"] == 1
    withheld_rows = {r for r, _ in plain.withheld}
    released = [row for r, row in enumerate(plain.rows) if r not in withheld_rows]
    expected, actual = by_keys(plain.columns, released, 2), by_keys(encrypted.columns, encrypted.rows, 2)
    assert withheld_rows and len(actual) == len(released) > 50  # small groups are left out, not marked
    assert actual.keys() == expected.keys()
    for group, cells in expected.items():
        got = actual[group]
        assert [got[c] for c in ("declarations", "taxpayers", "revenue")] == \
            [cells[c] for c in ("declarations", "taxpayers", "revenue")], group
        assert got["mean_vat"] == pytest.approx(cells["mean_vat"], rel=1e-12), group


def test_an_encrypted_total_without_groups_is_one_cell(deployment, key, direct):
    with deployment.client() as client:
        result = client.query(GRANT, "SELECT SUM(vat_paid) AS vat FROM tax.declarations", encryption_key=key)
    (expected,) = direct.execute("SELECT SUM(vat_paid) FROM tax.declarations WHERE district_code = ?",
                                 [XUANWU]).fetchone()
    assert result.columns == ["vat"] and result.rows == [[int(expected)]]


def partials(path: Path) -> dict:
    """Per (industry_section, size_class) of one partition: its cells and whether its threshold passes."""
    with duckdb.connect(str(path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT industry_section, size_class, COUNT(*), SUM(vat_paid), SUM(revenue), COUNT(revenue), "
            "COUNT(DISTINCT taxpayer_id) FROM tax.declarations WHERE district_code = ? GROUP BY 1, 2",
            [XUANWU]).fetchall()
    return {(section, size): (count, int(vat), int(revenue), n, entities >= 10)
            for section, size, count, vat, revenue, n, entities in rows}


def test_a_secure_sum_over_three_partitions_equals_the_sum_of_their_partials(deployment, key):
    with deployment.client() as client:
        result = client.query(PARTITIONED, SECTIONS_SQL, encryption_key=key)
    expected: dict = {}
    for path in deployment.partition_files:
        for group, (count, vat, revenue, n, passes) in partials(path).items():
            total = expected.setdefault(group, [0, 0, 0, 0, 0, False])
            if passes:
                total[0] += count
                total[1] += vat
                total[2] += revenue
                total[3] += n
                total[5] = True
            else:
                total[4] += 1  # a partition left this cell out
    expected = {group: total for group, total in expected.items() if total[5]}
    assert result.encryption["partitions"] == 3
    assert result.columns == ["industry_section", "size_class", "declarations", "vat", "mean_revenue"]
    got = {tuple(row[:2]): (row[2], row[3], row[4], withheld)
           for row, withheld in zip(result.rows, result.encryption["partitions_withheld"], strict=True)}
    assert got.keys() == expected.keys() and len(got) > 10
    for group, (count, vat, revenue, n, withheld, _) in expected.items():
        assert got[group][:2] == (count, vat), group
        assert got[group][2] == pytest.approx(revenue / n, rel=1e-12), group
        assert got[group][3] == withheld, group
    assert any(total[4] for total in expected.values()), "some partition should leave a small cell out"
    assert [tuple(row[:2]) for row in result.rows] == sorted(got), "groups come back in key order"


def test_the_broker_receives_no_plaintext_cell_and_no_secret_key(deployment, key, caplog, direct):
    assert not ts.context_from(key.encryption().public_context).has_secret_key()
    sql = "SELECT street_code, SUM(revenue) AS revenue, COUNT(*) AS n FROM tax.declarations GROUP BY street_code"
    secrets = [int(v) for (v,) in direct.execute(
        "SELECT SUM(revenue) FROM tax.declarations WHERE district_code = ? GROUP BY street_code "
        "HAVING COUNT(DISTINCT taxpayer_id) >= 10", [XUANWU]).fetchall()]
    assert len(secrets) >= 5 and all(v > 10**9 for v in secrets)

    def leaked(data: bytes) -> list[int]:
        return [v for v in secrets if any(form in data for form in _encodings(v))]

    with deployment.client() as client:
        deployment.clear()
        client.query(GRANT, sql)
        assert leaked(deployment.received()), "the check must see cells sent in plaintext"
        deployment.clear()
        with caplog.at_level(logging.DEBUG):
            client.query(GRANT, sql, encryption_key=key)
            client.query(PARTITIONED, sql, encryption_key=key)
    received = deployment.received()
    assert len(received) > 3 * 400_000  # the ciphertexts did pass through the proxies
    assert leaked(received) == []
    assert leaked(caplog.text.encode()) == []
    assert leaked(deployment.access_log.read_bytes()) == []


def _encodings(value: int) -> list[bytes]:
    """The ways a protobuf or a log could carry ``value``: zigzag and plain varints, 8 bytes, decimal text."""
    def varint(number: int) -> bytes:
        out = bytearray()
        while True:
            byte, number = number & 0x7F, number >> 7
            out.append(byte | (0x80 if number else 0))
            if not number:
                return bytes(out)
    return [varint(value << 1), varint(value), struct.pack("<q", value), str(value).encode()]


def test_a_result_under_another_key_is_refused(deployment, key):
    other = EncryptionKey.generate()
    sql = "SELECT COUNT(*) AS n FROM tax.declarations"
    with deployment.client() as client:
        response = client._queries.RunQuery(
            query_pb.RunQueryRequest(policy=f"policies/{GRANT}", sql=sql,
                                     encryption=client.encryption_for(GRANT, sql, other)),
            timeout=30, metadata=(("authorization", f"Bearer {client.token}"),))
    assert response.encrypted.key_id == other.key_id
    with pytest.raises(DsbrokerError) as caught:
        key.decrypt(response.encrypted)
    assert caught.value.reason == "ENCRYPTION_KEY_MISMATCH" and caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert other.decrypt(response.encrypted).rows[0][0] > 0


def test_a_key_file_whose_public_half_is_another_key_is_refused(tmp_path, key):
    path = tmp_path / "key.bfv"
    created, made = EncryptionKey.load_or_create(path)
    assert made and (path.stat().st_mode & 0o777) == 0o600
    again, made = EncryptionKey.load_or_create(path)
    assert not made and again.key_id == created.key_id
    (tmp_path / "key.bfv.pub").write_bytes(key.public_context)
    with pytest.raises(DsbrokerError) as caught:
        EncryptionKey.load(path)
    assert caught.value.reason == "ENCRYPTION_KEY_UNREADABLE"


def refusal(deployment, grant: str, sql: str, public_context: bytes | None) -> DsbrokerError:
    with deployment.client() as client:
        request = query_pb.RunQueryRequest(policy=f"policies/{grant}", sql=sql)
        if public_context is not None:
            request.encryption.public_context = public_context
        with pytest.raises(grpc.RpcError) as caught:
            client._queries.RunQuery(request, timeout=30, metadata=(("authorization", f"Bearer {token_for()}"),))
    return error_from_rpc_error(caught.value)


def other_parameters() -> bytes:
    context = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=8192, plain_modulus=786433)
    return bfv.public_bytes(context)


@pytest.mark.parametrize("public_context, reason", [
    (lambda key: key.context.serialize(save_secret_key=True), "ENCRYPTION_KEY_PRIVATE"),
    (lambda key: other_parameters(), "ENCRYPTION_KEY_INVALID"),
    (lambda key: b"not a context", "ENCRYPTION_KEY_INVALID"),
    (lambda key: b"", "ENCRYPTION_KEY_INVALID"),
], ids=["secret key", "other parameters", "garbage", "empty"])
def test_a_context_that_is_not_a_public_bfv_key_of_ours_is_refused(deployment, key, public_context, reason):
    error = refusal(deployment, GRANT, "SELECT COUNT(*) AS n FROM tax.declarations", public_context(key))
    assert error.reason == reason and error.code == grpc.StatusCode.INVALID_ARGUMENT
    with deployment.client() as client:  # and the broker keeps serving
        assert client.query(GRANT, "SELECT COUNT(*) AS n FROM tax.declarations", encryption_key=key).rows


def test_result_modes_are_those_the_grant_lists(deployment, key, client):
    error = refusal(deployment, PARTITIONED, "SELECT COUNT(*) AS n FROM tax.declarations", None)
    assert error.reason == "RESULT_MODE_NOT_GRANTED" and error.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(DsbrokerError) as caught:  # the shipped grant releases plaintext aggregates only
        client.query(GRANT, "SELECT COUNT(*) AS n FROM tax.declarations", encryption_key=key)
    assert caught.value.reason == "RESULT_MODE_NOT_GRANTED"


def test_the_access_log_names_the_key_and_the_partitions(deployment, key):
    with deployment.client() as client:
        result = client.query(PARTITIONED, "SELECT size_class, COUNT(*) AS n FROM tax.declarations GROUP BY 1",
                              encryption_key=key)
    store = open_log_store(str(deployment.access_log))
    try:
        records = store.records(where=RecordFilter(request_id=result.request_id))
    finally:
        store.close()
    decision, released = [r for r in records if r.event.startswith("query.")]
    assert decision.detail["encrypted"] is True and decision.detail["partitions"] == list(PARTITIONS)
    assert released.detail["key_id"] == key.key_id and released.detail["sandbox_id"] == ",".join(PARTITIONS)
    assert released.detail["rows"] == len(result.rows)


@pytest.fixture(scope="module")
def near_limit(tmp_path_factory):
    """A sandbox and broker over taxpayers whose totals come within a few fen of the exact range, or pass it."""
    state = tmp_path_factory.mktemp("near-limit")
    share = EXACT_LIMIT // 12
    rows = []
    for street, value in (("320102001", share), ("320102002", -share), ("320102003", share + 1)):
        rows += [(f"{street}-{i:02d}", "2026-01-01", street, value, value) for i in range(12)]
    data = declarations_file(state / "near-limit.duckdb", rows)
    sandbox = plaintext_sandbox(data, "near-limit", state / "executions.sqlite", datasets=("tax.declarations",))
    broker = start_broker(broker_settings_for(sandbox.port, state / "access-log.sqlite",
                                              policies=str(encrypted_policies(state / "policies")),
                                              sandbox_plaintext=True, sandbox_ca="", sandbox_cert="", sandbox_key=""))
    with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as client:
        yield client, share
    broker.stop()
    sandbox.stop()


def test_totals_near_the_range_limit_decrypt_exactly(near_limit, key):
    client, share = near_limit
    sql = ("SELECT street_code, SUM(vat_paid) AS vat, COUNT(*) AS n FROM tax.declarations "
           "WHERE street_code IN ('320102001', '320102002') GROUP BY street_code")
    plain = client.query(GRANT, sql)
    encrypted = client.query(GRANT, sql, encryption_key=key)
    assert sorted(encrypted.rows) == sorted(plain.rows) == [["320102001", 12 * share, 12],
                                                            ["320102002", -12 * share, 12]]
    assert EXACT_LIMIT - 12 * share < 12


def test_a_total_beyond_the_range_is_refused_not_wrapped(near_limit, key):
    client, share = near_limit
    sql = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE street_code = '320102003' GROUP BY 1"
    assert client.query(GRANT, sql).rows == [["320102003", 12 * (share + 1)]]  # in plaintext it is there
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, sql, encryption_key=key)
    error = caught.value
    assert error.reason == "ENCRYPTED_OVERFLOW" and error.code == grpc.StatusCode.OUT_OF_RANGE
    assert error.metadata["column"] == "vat" and str(12 * (share + 1)) not in str(error)


def test_with_partitions_each_cell_must_leave_room_for_the_others(near_limit):
    from dsbroker.guard import guard
    from sandbox.disclosure.encryption import encrypted_release
    policy = parse_policy(shipped_grant_text(without_dominance=ENCRYPTED).replace(
        "results: [aggregate]", "results: [aggregate, encrypted]"))
    guarded = guard("SELECT SUM(vat_paid) AS vat FROM tax.declarations", policy, district=XUANWU,
                    department="xuanwu-fgw", encrypted=True)
    cell = EXACT_LIMIT // 3 + 1
    # The cell table: the count of taxpayers (above the threshold), then the sum.
    table = (["__s0", "__s1"], ["BIGINT", "HUGEINT"], [(12, cell)])
    release = encrypted_release(*table, guarded, partitions=2, dataset="tax.declarations")
    assert release.measures[0].values == (cell,)
    with pytest.raises(DsbrokerError) as caught:
        encrypted_release(*table, guarded, partitions=3, dataset="tax.declarations")
    assert caught.value.reason == "ENCRYPTED_OVERFLOW"


def cli(deployment, *args: str, key_file: Path | None = None):
    keys = dev_keys()
    env = {"DSBROKER_BROKER": f"127.0.0.1:{deployment.broker.port}", "DSBROKER_TOKEN": token_for(),
           "DSBROKER_CA": str(keys.platform_ca), "DSBROKER_CERT": str(keys.client_cert("analyst")),
           "DSBROKER_KEY": str(keys.client_key("analyst"))}
    if key_file is not None:
        env["DSBROKER_ENCRYPTION_KEY"] = str(key_file)
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_query_encrypted_on_the_command_line_makes_the_key_once_and_decrypts_locally(deployment, tmp_path):
    sql = "SELECT industry_section, COUNT(*) AS n, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1"
    key_file = tmp_path / "department.bfv"
    first = cli(deployment, "query", "--grant", PARTITIONED, "--sql", sql, "--encrypted", "--json", key_file=key_file)
    assert first.exit_code == 0, first.output
    assert "made a new encryption key" in first.stderr and key_file.exists()
    answer = json.loads(first.stdout)
    key = EncryptionKey.load(key_file)
    assert answer["encryption"]["key_id"] == key.key_id and answer["encryption"]["partitions"] == 3
    with deployment.client() as client:
        assert answer["rows"] == client.query(PARTITIONED, sql, encryption_key=key).as_json()["rows"]
    table = cli(deployment, "query", "--grant", PARTITIONED, "--sql", sql, "--encrypted", key_file=key_file)
    assert table.exit_code == 0 and "made a new" not in table.stderr
    assert "the sum of 3" in table.stdout and "partitions left out" in table.stdout
    refused = cli(deployment, "query", "--grant", PARTITIONED, "--sql", sql)
    assert refused.exit_code != 0 and "RESULT_MODE_NOT_GRANTED" in refused.output
    explained = cli(deployment, "query", "--grant", PARTITIONED, "--sql", sql + " ORDER BY 1", "--encrypted",
                    "--explain")
    assert explained.exit_code != 0 and "ENCRYPTED_CLAUSE_NOT_ALLOWED" in explained.output


def test_the_log_reconciles_with_every_partitions_ledger(deployment, key, tmp_path):
    with deployment.client() as client:
        client.query(PARTITIONED, "SELECT size_class, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1",
                     encryption_key=key)
    ledgers = [arg for name in ("whole", *PARTITIONS)
               for arg in ("--ledger", str(deployment.access_log.with_name(f"{name}-executions.sqlite")))]
    result = CliRunner().invoke(main, ["audit", "reconcile", "--log", str(deployment.access_log), *ledgers])
    assert result.exit_code == 0, result.output
    assert "in 4 ledger(s)" in result.stdout


@pytest.mark.parametrize("stand_ins, reason, code", [
    ({"part-c": "whole"}, "PARTITION_NOT_NAMED", grpc.StatusCode.PERMISSION_DENIED),
    ({"part-b": "part-c", "part-c": "part-b"}, "PARTITION_MISCONFIGURED", grpc.StatusCode.FAILED_PRECONDITION),
    # The plan reaches part-a twice: its ledger runs an execution id once, so the second is refused.
    ({"part-c": "part-a"}, "PLAN_REPLAYED", grpc.StatusCode.ALREADY_EXISTS),
], ids=["a sandbox the policy does not name", "two partitions swapped", "one partition twice"])
def test_a_partition_address_that_reaches_the_wrong_sandbox_is_refused(deployment, key, tmp_path, stand_ins, reason,
                                                                        code):
    ports = dict(zip(("whole", *PARTITIONS), (proxy.port for proxy in deployment.proxies), strict=True))
    wrong = {**ports, **{name: ports[stand_in] for name, stand_in in stand_ins.items()}}
    broker = start_broker(broker_settings_for(
        ports["whole"], tmp_path / "access-log.sqlite", policies=str(encrypted_policies(tmp_path / "policies")),
        sandbox_plaintext=True, sandbox_ca="", sandbox_cert="", sandbox_key="",
        partitions=tuple(f"{name}=127.0.0.1:{wrong[name]}" for name in PARTITIONS)))
    try:
        with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as client:
            with pytest.raises(DsbrokerError) as caught:
                client.query(PARTITIONED, "SELECT COUNT(*) AS n FROM tax.declarations", encryption_key=key)
    finally:
        broker.stop()
    assert caught.value.reason == reason and caught.value.code == code


def test_a_partitions_cells_are_encrypted_once_over_groups_that_hold_all_of_its_own():
    from sandbox.disclosure.encryption import EncryptedRelease, Measure, PendingPartitions, check_domain
    from dsbroker.results.table import encode_table
    groups = encode_table(["street_code"], ["VARCHAR"], [("a",), ("b",)])
    release = EncryptedRelease(groups, (("a",), ("b",)), frozenset({("c",)}),
                               (Measure("n", 1, 1, (10, 20)),))
    pending = PendingPartitions(ttl=60)
    pending.put("execution-1", release, None, "sha256:x")
    assert pending.take("execution-1").release is release
    with pytest.raises(DsbrokerError) as caught:  # a replayed second round finds nothing
        pending.take("execution-1")
    assert caught.value.reason == "PARTITION_EXECUTION_UNKNOWN" and caught.value.code == grpc.StatusCode.NOT_FOUND
    assert check_domain(release, encode_table(["street_code"], ["VARCHAR"], [("a",), ("b",), ("c",)])) == \
        (("a",), ("b",), ("c",))
    for domain in ([("a",)], [("a",), ("b",), ("a",)]):  # one of its own groups missing; a repeat
        with pytest.raises(DsbrokerError) as caught:
            check_domain(release, encode_table(["street_code"], ["VARCHAR"], domain))
        assert caught.value.reason == "PARTITION_GROUPS_INVALID"
    with pytest.raises(DsbrokerError):  # other key columns
        check_domain(release, encode_table(["size_class"], ["VARCHAR"], [("a",), ("b",)]))
    expired = PendingPartitions(ttl=0)
    expired.put("execution-2", release, None, "sha256:x")
    with pytest.raises(DsbrokerError):
        expired.take("execution-2")


def test_under_noise_the_sandbox_encrypts_the_noisy_cells_and_a_repeat_is_the_stored_answer(deployment, key):
    sql = ("SELECT industry_section, COUNT(DISTINCT taxpayer_id) AS taxpayers, SUM(vat_paid) AS vat "
           "FROM tax.declarations GROUP BY industry_section")
    with deployment.client() as client:
        encrypted = client.query(NOISY, sql, encryption_key=key)
        plain = client.query(NOISY, sql)
        with pytest.raises(DsbrokerError) as caught:
            client.query(NOISY, "SELECT industry_section, AVG(vat_paid) AS v FROM tax.declarations GROUP BY 1",
                         encryption_key=key)
    assert caught.value.reason == "ENCRYPTED_AGGREGATE_NOT_SUPPORTED"
    assert encrypted.noise["epsilon_spent"] == 1.0 and plain.noise["repeated_answer"]
    assert encrypted.rows == plain.rows and len(encrypted.rows) > 3  # one draw of noise, whichever mode asks
    assert [rule["rule"] for rule in encrypted.disclosure_rules] == ["noisy_threshold", "noise"]
