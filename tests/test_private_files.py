"""Every state file dsbroker creates is mode 0600, whatever the umask: stores, logs and their -wal and
-shm, ledgers, keys, certificates, checkpoint and export files, encryption keys, server logs."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.access_log.log import AccessLog, AccessRecord
from dsbroker.records.checkpoints import load_or_create_signing_key
from broker.dev.keys import init_keys
from broker.workflow.store import open_store
from sandbox.ledgers.checkpoint_witness import CheckpointWitness
from sandbox.ledgers.executions import ExecutionLedger
from sandbox.ledgers.policies import PolicyLedger
from sandbox.ledgers.privacy import PrivacyLedger


@pytest.fixture
def open_umask():
    """The most permissive umask: a file is 0600 only because dsbroker made it so."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): mode(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_sqlite_state_and_its_wal_and_shm_are_private(tmp_path, open_umask):
    store = open_store(str(tmp_path / "state" / "broker-state.sqlite"))
    store.list_policies()
    log = AccessLog(tmp_path / "state" / "access-log.sqlite",
                    signing_key=load_or_create_signing_key(tmp_path / "state" / "access-log.key"))
    log.append(AccessRecord(event="call", decision="allow"))
    privacy = PrivacyLedger(tmp_path / "state" / "data.privacy.sqlite")
    executions = ExecutionLedger(tmp_path / "state" / "data.executions.sqlite", sandbox_id="s")
    policies = PolicyLedger(tmp_path / "state" / "policies.sqlite")
    # The witness ledger on a file of its own: it used to be created with the umask's mode.
    witness = CheckpointWitness(tmp_path / "state" / "witness.sqlite", broker_keys=[], witness_key=None,
                                witness_id="s")
    with contextlib.ExitStack() as opened:
        for thing in (store, log, privacy, executions, policies, witness):
            opened.callback(thing.close)
        found = modes(tmp_path / "state")
        assert {name for name in found if name.endswith(("-wal", "-shm"))} >= {
            "broker-state.sqlite-wal", "access-log.sqlite-wal", "data.executions.sqlite-wal"}
        assert {"access-log.key", "access-log.pub", "data.privacy.sqlite", "policies.sqlite",
                "witness.sqlite"} <= set(found)
        assert {name: m for name, m in found.items() if m != 0o600} == {}


def test_keys_init_writes_every_file_private(tmp_path, open_umask):
    init_keys(tmp_path / "keys", clients=("li",))
    found = modes(tmp_path / "keys")
    assert {"platform-ca.pem", "clients/li.pem", "idp/jwks.json", "trust.yaml", "signing/city-tax.key"} <= set(found)
    assert {name: m for name, m in found.items() if m != 0o600} == {}


def test_checkpoint_and_export_files_are_private(tmp_path, open_umask):
    from broker.cli.main import main

    log_path = tmp_path / "access-log.sqlite"
    log = AccessLog(log_path, signing_key=load_or_create_signing_key(tmp_path / "access-log.key"))
    log.append(AccessRecord(event="call", decision="allow"))
    log.close()  # signs a last checkpoint
    runner = CliRunner()
    for args in (["audit", "checkpoint", "--log", str(log_path), "--out", str(tmp_path / "kept.jsonl")],
                 ["audit", "export", "--log", str(log_path), "--out", str(tmp_path / "export.jsonl")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    assert (mode(tmp_path / "kept.jsonl"), mode(tmp_path / "export.jsonl")) == (0o600, 0o600)


def test_an_encryption_key_and_its_public_half_are_private(tmp_path, open_umask):
    from broker.client.encryption_key import EncryptionKey

    EncryptionKey.generate().save(tmp_path / "key.bfv")
    assert (mode(tmp_path / "key.bfv"), mode(tmp_path / "key.bfv.pub")) == (0o600, 0o600)


def test_the_owners_data_file_made_by_the_cli_and_its_partitions_are_private(tmp_path, open_umask):
    # tax.taxpayers holds the companies' names; the file was created with the umask's mode (0644 under 022).
    from broker.cli.main import main
    from sandbox.demo.data import split_demo_data

    data = tmp_path / "owner" / "owner-data.duckdb"
    result = CliRunner().invoke(main, ["data", "make", "--out", str(data), "--taxpayers", "100", "--months", "1"])
    assert result.exit_code == 0, result.output
    parts = split_demo_data(data, ["office-a", "office-b"], tmp_path / "partitions")
    assert {str(p): mode(p) for p in (data, *parts)} == {str(p): 0o600 for p in (data, *parts)}
    assert not [p for p in (tmp_path / "owner").iterdir() if p.name.startswith(".")], "no build left behind"
