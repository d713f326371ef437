"""The committed stubs match a fresh build, and the protos follow buf's standard naming rules."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from broker.v1 import (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
                       query_service_pb2)
from dsbroker.v1 import catalog_pb2, results_pb2
from sandbox.v1 import sandbox_service_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_a_fresh_build(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts/gen-protos"), str(tmp_path)], check=True,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "gen-protos produced nothing"
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / p, shallow=False)]
    assert not stale, f"stubs are stale; run scripts/gen-protos: {stale}"


def test_protos_follow_buf_standard_naming():
    modules = ((query_service_pb2, "broker.v1"), (catalog_service_pb2, "broker.v1"),
               (access_request_service_pb2, "broker.v1"), (policy_service_pb2, "broker.v1"),
               (audit_service_pb2, "broker.v1"), (sandbox_service_pb2, "sandbox.v1"),
               (results_pb2, "dsbroker.v1"), (catalog_pb2, "dsbroker.v1"))
    for module, package in modules:
        file = module.DESCRIPTOR
        assert file.package == package and file.name.startswith(package.replace(".", "/") + "/")
        for service in file.services_by_name.values():
            assert service.name.endswith("Service")
            for method in service.methods:
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"
        for enum in file.enum_types_by_name.values():
            prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_")
            assert enum.values[0].name == f"{prefix}_UNSPECIFIED" and enum.values[0].number == 0
            assert all(v.name.startswith(prefix + "_") for v in enum.values)
