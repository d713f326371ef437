"""The committed stubs match a fresh build, and the protos follow buf's standard naming rules."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from google.api import field_behavior_pb2

from broker.v1 import (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
                       query_service_pb2)
from dsbroker.v1 import catalog_pb2, product_pb2, results_pb2
from sandbox.v1 import sandbox_service_pb2

ROOT = Path(__file__).resolve().parent.parent
GO_MODULE = "github.com/dsbroker/dsbroker/gen/go"
PUBLIC = (query_service_pb2, catalog_service_pb2, access_request_service_pb2, policy_service_pb2, audit_service_pb2)
EVERY = (*PUBLIC, sandbox_service_pb2, results_pb2, catalog_pb2, product_pb2)
RESOURCES = ("broker.v1.AccessRequest", "broker.v1.Policy", "broker.v1.AccessRecord", "dsbroker.v1.Dataset")


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
               (results_pb2, "dsbroker.v1"), (catalog_pb2, "dsbroker.v1"), (product_pb2, "dsbroker.v1"))
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


def test_every_proto_names_its_go_and_java_packages_one_per_directory():
    by_directory: dict[str, set[tuple[str, str]]] = {}
    for module in EVERY:
        file = module.DESCRIPTOR
        options = file.GetOptions()
        directory = file.name.rsplit("/", 1)[0]
        name, version = file.package.split(".")
        assert options.go_package == f"{GO_MODULE}/{directory};{name}{version}", file.name
        assert options.java_package == ("org.dsbroker." + file.package).replace("dsbroker.dsbroker.", "dsbroker.")
        assert options.java_multiple_files and options.java_outer_classname.endswith("Proto"), file.name
        by_directory.setdefault(directory, set()).add((options.go_package, options.java_package))
    assert all(len(packages) == 1 for packages in by_directory.values()), by_directory


def _behaviors(field) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def test_every_field_a_caller_sets_or_a_resource_holds_says_how_it_behaves():
    """google.api.field_behavior (AIP-203) on each field of the public requests and of each resource; a resource's
    name is its IDENTIFIER."""
    unmarked = []
    for module in PUBLIC:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                unmarked += [f"{method.input_type.name}.{f.name}" for f in method.input_type.fields
                             if not _behaviors(f)]
    for full_name in RESOURCES:
        message = next(m.DESCRIPTOR.message_types_by_name[full_name.split(".")[-1]] for m in EVERY
                       if m.DESCRIPTOR.package == full_name.rsplit(".", 1)[0]
                       and full_name.split(".")[-1] in m.DESCRIPTOR.message_types_by_name)
        unmarked += [f"{message.name}.{f.name}" for f in message.fields if not _behaviors(f)]
        assert _behaviors(message.fields_by_name["name"]) == [field_behavior_pb2.IDENTIFIER], full_name
    assert unmarked == []
