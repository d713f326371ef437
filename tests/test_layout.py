"""The tree is the architecture: which side may import which, checked on the source and on a fresh interpreter.

- ``dsbroker/`` is the core both sides run: it imports neither ``broker`` nor ``sandbox`` (their stubs
  included); what both sides carry on the wire is its own package, ``dsbroker.v1``.
- The protos follow: the public API (``broker.v1``) and the internal one (``sandbox.v1``) import ``dsbroker.v1``
  and never each other.
- ``sandbox/`` runs on the owner's side and must not trust the broker: it imports nothing of ``broker``.
- ``broker/`` calls the sandbox through its generated stubs (``sandbox.v1``) only. The exceptions are the
  launchers, which start either server on one machine: ``broker/cli`` (``dsbroker sandbox serve``, ``policy
  lint`` against the owner's data, ``demo-data``) and ``broker/dev`` (the demo and the benchmarks). A
  broker *server* process loads no sandbox module beyond the stubs; that is checked on a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCHERS = ("broker/cli/", "broker/dev/")


def _sources(package: str) -> list[Path]:
    return [p for p in sorted((ROOT / package).rglob("*.py")) if "/v1/" not in p.as_posix()]


def _imported(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names, anywhere in the file (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _crossings(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in _sources(package):
        where = path.relative_to(ROOT).as_posix()
        for line, module in _imported(path):
            top = module.split(".")[0]
            if top in forbidden and not any(module == a or module.startswith(a + ".") for a in allowed):
                bad.append(f"{where}:{line} imports {module}")
    return sorted(set(bad))


def test_core_imports_neither_side():
    assert _crossings("dsbroker", ("broker", "sandbox")) == []


def test_the_public_api_and_the_internal_one_share_only_the_core_package():
    from broker.v1 import (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
                           query_service_pb2)
    from sandbox.v1 import sandbox_service_pb2

    public = (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
              query_service_pb2)
    for module in public:
        assert [d.name for d in module.DESCRIPTOR.dependencies if d.package == "sandbox.v1"] == [], module.__name__
    assert [d.name for d in sandbox_service_pb2.DESCRIPTOR.dependencies if d.package == "broker.v1"] == []
    assert "dsbroker.v1" in {d.package for m in (*public, sandbox_service_pb2) for d in m.DESCRIPTOR.dependencies}


def test_sandbox_imports_nothing_of_the_broker():
    assert _crossings("sandbox", ("broker",)) == []


def test_broker_reaches_the_sandbox_through_its_stubs_only():
    bad = [b for b in _crossings("broker", ("sandbox",), allowed=("sandbox.v1",)) if not b.startswith(LAUNCHERS)]
    assert bad == []


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from broker.query import pipeline\n    import sandbox.engine\n")
    assert [name for _, name in _imported(module)] == ["broker.query", "broker.query.pipeline", "sandbox.engine"]


def _loaded(statement: str, prefixes: tuple[str, ...]) -> list[str]:
    code = (f"import sys\n{statement}\n"
            f"print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.split()


@pytest.mark.parametrize("statement, prefixes, allowed", [
    ("import sandbox.server", ("broker",), ()),
    ("import broker.server", ("sandbox",), ("sandbox", "sandbox.v1")),
    ("import dsbroker.guard", ("broker", "sandbox", "tenseal"), ()),
    ("import dsbroker.guard, dsbroker.policy.model", ("tenseal",), ()),
], ids=["sandbox-loads-no-broker", "broker-server-loads-only-sandbox-stubs", "guard-alone",
        "guard-without-tenseal"])
def test_a_fresh_process_loads_only_its_side(statement, prefixes, allowed):
    loaded = _loaded(statement, prefixes)
    assert [m for m in loaded if m not in allowed and not m.startswith("sandbox.v1.")] == []


def _layout_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Layout\n"):]
    return section[section.index("```\n") + 4:section.index("\n```", section.index("```\n") + 4)]


GUARD_RULE_PREFIXES = ("reject_", "add_", "enforce_", "split_", "translate_", "resolve_", "expand_", "qualify_",
                       "_tree")


def test_the_readme_layout_names_every_module_and_only_modules_that_exist():
    block = _layout_block()
    modules = [p for package in ("dsbroker", "broker", "sandbox") for p in _sources(package)
               if p.name != "__init__.py"]
    unnamed = [p.relative_to(ROOT).as_posix() for p in modules
               if p.name not in block and p.stem not in block.split()
               and not (p.parent.name == "guard" and p.name.startswith(GUARD_RULE_PREFIXES))]
    assert unnamed == []
    import re

    named = set(re.findall(r"[\w]+\.py\b", block))
    existing = {p.name for p in modules} | {"__init__.py"}
    assert sorted(named - existing) == []
