"""The tree is the architecture: the core (dsbroker/) imports neither side, the sandbox imports nothing of the
broker, and the public API's protos (broker.v1) never import the internal one (sandbox.v1) or the reverse; what
both carry is the core's package, dsbroker.v1."""

from __future__ import annotations

import ast
from pathlib import Path

from broker.v1 import (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
                       query_service_pb2)
from sandbox.v1 import sandbox_service_pb2

ROOT = Path(__file__).resolve().parent.parent


def imported(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` (generated stubs aside) and the top-level packages, or ``x.v1`` stubs, it imports."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.relative_to(ROOT).parts[1] == "v1":
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = {".".join(n.split(".")[:2]) if ".v1" in n else n.split(".")[0]
                                              for n in names}
    return found


def test_the_core_imports_neither_side_and_only_its_own_stubs():
    wrong = {module: names & {"broker", "sandbox", "broker.v1", "sandbox.v1"}
             for module, names in imported("dsbroker").items()}
    assert {m: n for m, n in wrong.items() if n} == {}


def test_the_sandbox_imports_nothing_of_the_broker():
    wrong = {module: names & {"broker", "broker.v1"} for module, names in imported("sandbox").items()}
    assert {m: n for m, n in wrong.items() if n} == {}


def test_the_public_api_and_the_internal_one_share_only_the_core_package():
    public = (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
              query_service_pb2)
    for module in public:
        assert not [d.name for d in module.DESCRIPTOR.dependencies if d.package == "sandbox.v1"], module.__name__
    assert not [d.name for d in sandbox_service_pb2.DESCRIPTOR.dependencies if d.package == "broker.v1"]
    shared = {d.package for m in (*public, sandbox_service_pb2) for d in m.DESCRIPTOR.dependencies}
    assert "dsbroker.v1" in shared
