"""Errors have one owner: dsbroker/errors.py declares the tree and every reason; raise sites only name them.

The raise sites are read from the source (AST) of dsbroker/, broker/ and sandbox/, in every form the code
uses: a reason given as ``reason="..."`` to an error class (by name, or through a local such as the guard's
``cls = GuardPermissionError if ... else GuardError``), a class's default ``reason = "..."``, a module
constant (``REASON = "..."``), a table of constants (reject_unsupported_syntax's ``_NAMED``), and helpers
that pass their ``reason`` parameter on (the guard's ``refuse``, the lookups' ``_problem``, ...), whose
callers then name the reason. A site whose reason this test cannot read fails it, so a new form has to be
taught here rather than slip past; the one site that may build an error from whatever a server sent is
dsbroker.rpc.status.error_from_rpc_error. Beyond raise sites, a reason-shaped constant given as
``reason=`` to anything else (a record, a check's verdict) or compared with an error's ``reason`` must be
declared too (or be a code's name, which is what a status without an ErrorInfo arrives as).

Codes: only dsbroker/errors.py (which names them) and dsbroker/rpc/ (which maps them to gRPC and reads
them off the wire) may name ``grpc.StatusCode``. Elsewhere no raise site passes ``code=`` and no error
class declares ``code``: the code is the reason's. Code that reads a received error's code (the CLI's
exit status and printed line read ``error.code.name``, the SDK hands ``error.code`` to its users) is
allowed, since it chooses nothing; comparing reasons is better still, and what the broker does.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from dsbroker import errors
from dsbroker.errors import GUARD_REASONS, REASONS, REASONS_DECLARED, DsbrokerError
from dsbroker.rpc.status import error_from_rpc_error, grpc_code, to_grpc_status

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("dsbroker", "broker", "sandbox")
ERRORS_MODULE = "dsbroker/errors.py"
# Where an error may carry a reason and code not written in the source: one rebuilt from a server's status.
RECEIVED = {("dsbroker/rpc/status.py", "error_from_rpc_error")}
NOT_METADATA = {"reason", "code", "details"}


@dataclass(frozen=True)
class Site:
    path: str
    line: int
    reasons: tuple[str, ...]
    fields: frozenset[str]
    via: str  # the class or helper that raises it

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.via})"


def _name(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _own_calls(scope: ast.AST):
    """The calls in ``scope`` that are not inside a function nested in it."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


class Source:
    """Every module of the three packages (generated stubs aside), and what the test reads of them."""

    def __init__(self) -> None:
        files = sorted(p for root in SOURCES for p in (ROOT / root).rglob("*.py")
                       if not p.name.endswith(("_pb2.py", "_pb2_grpc.py")))
        self.trees = {p.relative_to(ROOT).as_posix(): ast.parse(p.read_text(encoding="utf-8")) for p in files}
        self.classes = {node.name: (path, node) for path, tree in self.trees.items()
                        for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
        self.errors = {name for name in self.classes if self._is_error(name)}
        self.sites: list[Site] = []
        self.unreadable: list[str] = []
        self.helpers: dict[tuple[str, str], tuple[int, str, frozenset[str], bool, frozenset[str]]] = {}
        self._read()

    # -- classes -----------------------------------------------------------------------------------------

    def _base(self, name: str) -> str | None:
        node = self.classes.get(name, (None, None))[1]
        return next((_name(b) for b in node.bases), None) if node is not None else None

    def _is_error(self, name: str | None) -> bool:
        seen = set()
        while name and name not in seen:
            if name == "DsbrokerError":
                return True
            seen.add(name)
            name = self._base(name)
        return False

    def _own(self, name: str, attribute: str) -> ast.expr | None:
        for statement in self.classes[name][1].body:
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target] \
                if isinstance(statement, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == attribute for t in targets):
                return statement.value
        return None

    def default_reason(self, name: str) -> str:
        while name in self.classes:
            value = self._own(name, "reason")
            if value is not None:
                return ast.literal_eval(value)
            name = self._base(name)
        raise AssertionError("DsbrokerError declares a default reason")

    def consumed(self, name: str) -> set[str]:
        """Keyword parameters of the class's constructors that do not reach DsbrokerError's metadata."""
        out: set[str] = set()
        while name in self.classes and name != "DsbrokerError":
            for statement in self.classes[name][1].body:
                if isinstance(statement, ast.FunctionDef) and statement.name == "__init__":
                    passed = {k.arg for n in ast.walk(statement) if isinstance(n, ast.Call)
                              and _name(n.func) == "__init__" for k in n.keywords}
                    out |= {a.arg for a in statement.args.kwonlyargs} - passed
            name = self._base(name)
        return out

    # -- raise sites ---------------------------------------------------------------------------------

    def _raised_classes(self, call: ast.Call, scope: ast.AST) -> list[str]:
        name = _name(call.func)
        if name in self.errors:
            return [name]
        if isinstance(call.func, ast.Name):  # a local bound to error classes: cls = A if ... else B
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                    found = [n.id for n in ast.walk(node.value) if isinstance(n, ast.Name) and n.id in self.errors]
                    if found:
                        return found
        return []

    def _constants(self, path: str, scope: ast.AST, node: ast.expr) -> tuple[str, ...] | None:
        """The reason(s) ``node`` can be: a constant, a module constant, or the first items of a module table."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return (node.value,)
        if not isinstance(node, ast.Name):
            return None
        module = self.trees[path]
        for statement in module.body:
            if (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                    and any(isinstance(t, ast.Name) and t.id == node.id for t in statement.targets)):
                return (statement.value.value,)
        for assign in ast.walk(scope):  # reason, message = TABLE[...]
            if (isinstance(assign, ast.Assign) and isinstance(assign.targets[0], ast.Tuple)
                    and isinstance(assign.value, ast.Subscript) and isinstance(assign.value.value, ast.Name)
                    and _name(assign.targets[0].elts[0]) == node.id):
                for statement in module.body:
                    target = (statement.targets[0] if isinstance(statement, ast.Assign)
                              else getattr(statement, "target", None))
                    if _name(target) == assign.value.value.id and isinstance(statement.value, ast.Dict):
                        return tuple(sorted({value.elts[0].value for value in statement.value.values}))
        return None

    def _read(self) -> None:
        for path, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name in self.errors and self._own(node.name, "reason"):
                    self.sites.append(Site(path, node.lineno, (self.default_reason(node.name),), frozenset(),
                                           f"class {node.name}"))
            for scope in [tree, *_functions(tree)]:
                for call in _own_calls(scope):
                    raised = self._raised_classes(call, scope)
                    if raised:
                        self._construction(path, scope, call, raised)
        for path, tree in self.trees.items():
            for scope in _functions(tree):
                for call in _own_calls(scope):
                    self._helper_call(path, tree, scope, call)

    def _construction(self, path: str, scope: ast.AST, call: ast.Call, raised: list[str]) -> None:
        keywords = {k.arg: k.value for k in call.keywords}
        where = (path, getattr(scope, "name", "<module>"))
        fields = frozenset(k for k in keywords if k is not None) - NOT_METADATA - self.consumed(raised[0])
        splat = None in keywords
        reason = keywords.get("reason")
        parameters = [a.arg for a in (*scope.args.posonlyargs, *scope.args.args, *scope.args.kwonlyargs)] \
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
        if where in RECEIVED:
            return
        if isinstance(reason, ast.Name) and reason.id in parameters:  # a helper: its callers name the reason
            forwards = splat and scope.args.kwarg is not None and any(
                k.arg is None and _name(k.value) == scope.args.kwarg.arg for k in call.keywords)
            self.helpers[(path, scope.name)] = (parameters.index(reason.id), reason.id, fields, forwards,
                                                frozenset(parameters))
            return
        reasons = (self.default_reason(raised[0]),) if reason is None else self._constants(path, scope, reason)
        if reasons is None or splat:
            self.unreadable.append(f"{path}:{call.lineno}: {ast.unparse(call)[:120]}")
            return
        self.sites.append(Site(path, call.lineno, reasons, fields, "/".join(raised)))

    def _helper_call(self, path: str, tree: ast.Module, scope: ast.AST, call: ast.Call) -> None:
        name = _name(call.func)
        for (helper_path, helper), (index, parameter, fixed, forwards, named) in self.helpers.items():
            if helper != name or not isinstance(call.func, ast.Name):
                continue
            module = helper_path[:-3].replace("/", ".")
            imported = any(isinstance(n, ast.ImportFrom) and n.module == module and any(a.name == name for a in n.names)
                           for n in tree.body)
            if path != helper_path and not imported:
                continue
            keywords = {k.arg: k.value for k in call.keywords}
            reason = call.args[index] if len(call.args) > index else keywords.get(parameter)
            reasons = self._constants(path, scope, reason) if reason is not None else None
            if reasons is None:
                self.unreadable.append(f"{path}:{call.lineno}: {ast.unparse(call)[:120]}")
                continue
            extra = {k for k in keywords if k is not None and k not in named} if forwards else set()
            self.sites.append(Site(path, call.lineno, reasons, fixed | extra, f"{helper}()"))


@functools.cache
def source() -> Source:
    return Source()


def by_reason() -> dict[str, list[Site]]:
    found = defaultdict(list)
    for site in source().sites:
        for reason in site.reasons:
            found[reason].append(site)
    return found


# -- the registry --------------------------------------------------------------------------------------------

def test_each_reason_is_declared_once():
    calls = [n for n in ast.walk(source().trees[ERRORS_MODULE])
             if isinstance(n, ast.Call) and _name(n.func) == "Reason"]
    written = [ast.literal_eval(c.args[0] if c.args else next(k.value for k in c.keywords if k.arg == "name"))
               for c in calls]
    twice = sorted({name for name in written if written.count(name) > 1})
    assert not twice, f"declared more than once in dsbroker/errors.py: {twice}"
    assert len(REASONS) == len(REASONS_DECLARED) == len(written)


def test_every_raised_reason_is_declared():
    assert len(source().sites) > 300, "the scan lost the raise sites"
    undeclared = {reason: [str(s) for s in sites] for reason, sites in by_reason().items() if reason not in REASONS}
    assert not undeclared, f"declare these reasons in dsbroker.errors.REASONS: {undeclared}"


def _reason_shaped(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+|[A-Z]+", n.value)]


def _is_reason(node: ast.AST) -> bool:
    """``x.reason`` or ``getattr(x, "reason", ...)``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "reason"
    return (isinstance(node, ast.Call) and _name(node.func) == "getattr" and len(node.args) > 1
            and getattr(node.args[1], "value", None) == "reason")


def test_reasons_given_or_compared_anywhere_are_declared():
    # Forms the scan of raise sites does not model: reason="..." to any callable (an error built some other
    # way, a record or check that carries an error's reason), and reasons compared with an error's. A code's
    # name is a reason too: error_from_rpc_error gives it to a status that came without an ErrorInfo.
    known = set(REASONS) | set(errors.CODES)
    found = []
    for path, tree in source().trees.items():
        constants = {t.id: s.value for s in tree.body if isinstance(s, ast.Assign) for t in s.targets
                     if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "reason" and isinstance(node.value, ast.Constant):
                found += [(path, node.value.lineno, r) for r in _reason_shaped(node.value)]
            if isinstance(node, ast.Compare) and _is_reason(node.left):
                for other in node.comparators:
                    other = constants.get(other.id, other) if isinstance(other, ast.Name) else other
                    found += [(path, node.lineno, r) for r in _reason_shaped(other)]
    assert ("sandbox/ledgers/privacy.py", "SANDBOX_BUSY") in {(p, r) for p, _l, r in found}, "NOTHING_READ was lost"
    unknown = [f"{path}:{line} {reason}" for path, line, reason in found if reason not in known]
    assert not unknown, f"declare these reasons in dsbroker.errors.REASONS: {unknown}"


def test_every_raise_site_is_read():
    assert not source().unreadable, ("this test cannot tell the reason (or the metadata) of these raise sites; "
                                     "name the reason as a constant, or teach the test the new form: "
                                     f"{source().unreadable}")
    helpers = {name for _path, name in source().helpers}
    assert {"refuse", "_problem", "_refusal"} <= helpers, helpers


def test_every_declared_reason_is_raised():
    unused = sorted(set(REASONS) - set(by_reason()))
    assert not unused, f"no code raises these; remove them from dsbroker.errors.REASONS: {unused}"


def test_raise_sites_pass_only_their_reasons_fields():
    wrong = [f"{site}: {reason} does not declare {sorted(site.fields - set(REASONS[reason].fields))}"
             for site in source().sites for reason in site.reasons
             if reason in REASONS and not site.fields <= set(REASONS[reason].fields)]
    assert not wrong, "add the field to the reason's entry in REASONS, or pass a declared one:\n" + "\n".join(wrong)


def test_declared_entries_are_well_formed():
    for reason in REASONS.values():
        assert reason.summary and reason.summary == reason.summary.strip(), reason.name
        assert len(set(reason.fields)) == len(reason.fields), reason.name
        assert grpc_code(reason.code) is grpc.StatusCode[reason.code], reason.name


def test_the_guards_reasons_are_the_ones_its_refusals_give():
    # tests/test_guard_properties.py accepts a refusal whose reason is in GUARD_REASONS.
    refused = {reason for site in source().sites if site.via == "refuse()" and site.path.startswith("dsbroker/guard/")
               for reason in site.reasons} | {errors.GuardError.reason}
    assert refused == GUARD_REASONS


# -- codes -------------------------------------------------------------------------------------------------

def _names_status_code(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "StatusCode":
        return True
    return (isinstance(node, ast.ImportFrom) and node.module == "grpc"
            and any(a.name == "StatusCode" for a in node.names))


def test_only_errors_and_rpc_name_grpc_status_codes():
    naming = [f"{path}:{node.lineno}" for path, tree in source().trees.items()
              if path != ERRORS_MODULE and not path.startswith("dsbroker/rpc/")
              for node in ast.walk(tree) if _names_status_code(node)]
    assert not naming, f"an error's code is its reason's (dsbroker.errors.REASONS); do not choose one here: {naming}"


def test_no_raise_site_or_error_class_chooses_a_code():
    chosen = []
    for path, tree in source().trees.items():
        for scope in [tree, *_functions(tree)]:
            for call in _own_calls(scope):
                if ((path, getattr(scope, "name", "")) not in RECEIVED and source()._raised_classes(call, scope)
                        and any(k.arg == "code" for k in call.keywords)):
                    chosen.append(f"{path}:{call.lineno}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in source().errors and source()._own(node.name, "code"):
                chosen.append(f"{path}:{node.lineno} class {node.name}")
    assert not chosen, f"remove code: the reason's entry in REASONS gives it: {chosen}"


def test_an_error_answers_with_its_reasons_code():
    for reason in REASONS.values():
        error = DsbrokerError("m", reason=reason.name)
        assert error.code_name == reason.code and error.code is grpc.StatusCode[reason.code]
        assert to_grpc_status(error).code is grpc.StatusCode[reason.code]


def test_error_classes_live_in_errors_py_and_declare_only_a_default_reason():
    elsewhere = sorted(name for name in source().errors if source().classes[name][0] != ERRORS_MODULE)
    assert not elsewhere, f"move these error classes into dsbroker/errors.py: {elsewhere}"
    for name in source().errors:
        cls = getattr(errors, name)
        assert cls.reason in REASONS, name
    with pytest.raises(TypeError, match="code"):
        type("Chooser", (DsbrokerError,), {"code": grpc.StatusCode.ABORTED})


# -- errors received from a server -------------------------------------------------------------------------

class _Failed(grpc.RpcError):
    """A failed call as a client sees it."""

    def __init__(self, status: grpc.Status | None, code: grpc.StatusCode, message: str) -> None:
        self._status, self._code, self._message = status, code, message

    def code(self):
        return self._code

    def details(self):
        return self._message

    def trailing_metadata(self):
        return self._status.trailing_metadata if self._status else ()


def test_a_client_keeps_reasons_and_codes_this_version_does_not_know():
    # A newer server's reason, with a code no entry of ours gives it: both arrive as sent.
    sent = DsbrokerError("later", reason="SOMETHING_NEWER", code="ABORTED", table="tax.declarations")
    status = to_grpc_status(sent)
    got = error_from_rpc_error(_Failed(status, status.code, status.details))
    assert "SOMETHING_NEWER" not in REASONS
    assert (got.reason, got.code, got.metadata) == ("SOMETHING_NEWER", grpc.StatusCode.ABORTED,
                                                    {"table": "tax.declarations"})
    # A known reason under another code than ours (another version's registry) keeps the code it came with.
    sent = DsbrokerError("m", reason="PLAN_REPLAYED", code=grpc.StatusCode.INTERNAL)
    status = to_grpc_status(sent)
    assert error_from_rpc_error(_Failed(status, status.code, status.details)).code is grpc.StatusCode.INTERNAL
    # No ErrorInfo at all (a proxy, gRPC itself): the code's name is the reason.
    bare = error_from_rpc_error(_Failed(None, grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert (bare.reason, bare.code, bare.message) == ("UNAVAILABLE", grpc.StatusCode.UNAVAILABLE, "connection refused")


def test_a_client_keeps_metadata_named_like_the_errors_own_fields():
    # A server (another version, or a hostile broker) may name ErrorInfo metadata "reason", "code",
    # "details" or "message": the client must not fail on it with a TypeError, nor let it change the reason.
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    info = error_details_pb2.ErrorInfo(reason="QUERY_REFUSED", domain="dsbroker",
                                       metadata={"reason": "x", "code": "OK", "details": "d", "message": "m"})
    packed = any_pb2.Any()
    packed.Pack(info)
    status = rpc_status.to_status(status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="refused",
                                                details=[packed]))
    got = error_from_rpc_error(_Failed(status, status.code, status.details))
    assert (got.reason, got.code, got.message) == ("QUERY_REFUSED", grpc.StatusCode.INVALID_ARGUMENT, "refused")
    assert got.metadata == {"reason": "x", "code": "OK", "details": "d", "message": "m"}


# -- the README --------------------------------------------------------------------------------------------

README = (ROOT / "README.md").read_text(encoding="utf-8")
_CODE = "|".join(errors.CODES)


def _registered(name: str) -> list[str]:
    """The reasons a README name stands for: itself, or every reason a ``PREFIX_*`` starts with."""
    if name.endswith("_*"):
        return [r for r in REASONS if r.startswith(name[:-1])]
    return [name] if name in REASONS else []


def test_the_readme_gives_reasons_their_codes():
    # "INVALID_ARGUMENT `REQUEST_ID_INVALID`" wherever the README says it, and the paragraph of other reasons,
    # grouped "CODE `A`, `B`; CODE `C`".
    said = [m.groups() for m in re.finditer(rf"\b({_CODE}),? `([A-Z][A-Z0-9_]+)`", README)]
    paragraph = README[README.index("Other reasons, by code:"):].split("\n\n")[0]
    for group in paragraph.removeprefix("Other reasons, by code:").split(";"):
        code = re.match(rf"\s*({_CODE})\b", group)
        assert code, f"a group of README's other reasons that does not start with its code: {group!r}"
        said += [(code.group(1), name) for name in re.findall(r"`([A-Z][A-Z0-9_]*\*?)`", group) if name != "REASONS"]
    assert len(said) > 40
    wrong = [(code, name) for code, name in said
             if not _registered(name) or any(REASONS[r].code != code for r in _registered(name))]
    assert not wrong, f"README.md gives these reasons another code than dsbroker.errors.REASONS: {wrong}"
