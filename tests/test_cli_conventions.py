"""The CLI as people expect it: profiles, exit codes by kind, --version, --json everywhere, spreadsheets,
money in 元, and times in the owner's zone, against a real broker and sandbox."""

from __future__ import annotations

import datetime as dt
import json
import stat
import sys
from decimal import Decimal

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from broker.access_log.log import AccessLog
from broker.cli.exit_codes import ExitCode
from broker.cli.main import main
from broker.cli.money import money_columns, money_text
from dsbroker.records.access_record import AccessRecord
from tests.conftest import ANALYST, GRANT, POLICIES, XUANWU, dev_keys, log_key, token_for, writing_log
from tests.test_cli_workflow import as_actor

SQL = "SELECT street_code, COUNT(*) AS n, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"


def run(env, *args):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def config(tmp_path):
    """A profiles file of this test's own (never the user's)."""
    return tmp_path / "config" / "profiles.toml"


@pytest.fixture
def requester(broker, config):
    return {**as_actor(f"127.0.0.1:{broker.port}", "xuanwu-fgw", XUANWU, "requester"), "DSBROKER_CONFIG": str(config)}


def only_config(config, **more):
    """No client variable at all: the profile has to do it (each one set empty hides the caller's own)."""
    return {"DSBROKER_CONFIG": str(config), "DSBROKER_BROKER": None, "DSBROKER_TOKEN": None, "DSBROKER_CA": None,
            "DSBROKER_CERT": None, "DSBROKER_KEY": None, "DSBROKER_PLAINTEXT": None, "DSBROKER_PROFILE": None,
            **more}


# -- profiles ----------------------------------------------------------------------------------------

def add_profile(config, name, broker_target, tmp_path, *extra):
    keys = dev_keys()
    script = tmp_path / f"token-{name}.py"
    script.write_text(f"print({token_for()!r})\n")
    return run(only_config(config), "profile", "add", name, "--broker", broker_target, "--ca", str(keys.platform_ca),
               "--cert", str(keys.client_cert(ANALYST)), "--key", str(keys.client_key(ANALYST)),
               "--token-command", f"{sys.executable} {script}", *extra)


def test_a_command_run_with_only_a_profile_reaches_the_broker(broker, config, tmp_path):
    added = add_profile(config, "xuanwu", f"127.0.0.1:{broker.port}", tmp_path)
    assert added.exit_code == 0, added.output
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "token_command" in config.read_text() and "eyJ" not in config.read_text()  # the command, not a token
    answered = run(only_config(config), "query", "--profile", "xuanwu", "--grant", GRANT, "--sql", SQL, "--json")
    assert answered.exit_code == 0, answered.output
    assert json.loads(answered.output)["columns"] == ["street_code", "n", "vat"]
    # The first profile added is the current one: no --profile needed.
    assert run(only_config(config), "query", "--grant", GRANT, "--sql", SQL, "--json").exit_code == 0


def test_profiles_are_listed_used_shown_and_removed(broker, config, tmp_path):
    add_profile(config, "one", "127.0.0.1:1", tmp_path)
    add_profile(config, "two", f"127.0.0.1:{broker.port}", tmp_path)
    listed = json.loads(run(only_config(config), "profile", "list", "--json").output)
    assert listed == {"current": "one", "profiles": ["one", "two"]}
    assert run(only_config(config), "profile", "use", "two").exit_code == 0
    shown = json.loads(run(only_config(config), "profile", "show", "--json").output)
    assert shown["name"] == "two" and shown["current"] is True and shown["broker"] == f"127.0.0.1:{broker.port}"
    assert run(only_config(config), "profile", "remove", "two").exit_code == 0
    assert json.loads(run(only_config(config), "profile", "list", "--json").output)["profiles"] == ["one"]
    missing = run(only_config(config), "query", "--profile", "two", "--grant", GRANT, "--sql", SQL)
    assert missing.exit_code == ExitCode.USAGE and "no profile 'two'" in missing.output


def test_a_flag_beats_the_environment_which_beats_the_profile(broker, config, tmp_path):
    add_profile(config, "down", "127.0.0.1:1", tmp_path)  # a profile naming a broker that is not there
    target = f"127.0.0.1:{broker.port}"
    from_profile = run(only_config(config), "query", "--timeout", "2", "--grant", GRANT, "--sql", SQL)
    assert from_profile.exit_code == ExitCode.UNAVAILABLE, from_profile.output
    from_env = run(only_config(config, DSBROKER_BROKER=target), "query", "--grant", GRANT, "--sql", SQL, "--json")
    assert from_env.exit_code == 0, from_env.output
    from_flag = run(only_config(config, DSBROKER_BROKER=target), "query", "--broker", "127.0.0.1:1", "--timeout", "2",
                    "--grant", GRANT, "--sql", SQL)
    assert from_flag.exit_code == ExitCode.UNAVAILABLE
    # The environment's token is used, not the profile's command: a bad one is refused as such.
    bad_token = run(only_config(config, DSBROKER_BROKER=target, DSBROKER_TOKEN="not.a.token"), "query", "--grant",
                    GRANT, "--sql", SQL)
    assert bad_token.exit_code == ExitCode.UNAUTHENTICATED and "UNAUTHENTICATED" in bad_token.output


def test_a_failing_token_command_is_a_clear_usage_error(broker, config, tmp_path):
    run(only_config(config), "profile", "add", "broken", "--broker", f"127.0.0.1:{broker.port}", "--plaintext",
        "--token-command", f"{sys.executable} -c 'import sys; print(\"secret\"); sys.exit(3)'")
    failed = run(only_config(config), "query", "--grant", GRANT, "--sql", SQL)
    assert failed.exit_code == ExitCode.USAGE and "token command exited 3" in failed.output
    assert "secret" not in failed.output


# -- exit codes and --version ------------------------------------------------------------------------

def test_each_kind_of_failure_has_its_exit_code(requester, tmp_path):
    assert run(requester, "query", "--grant", GRANT).exit_code == ExitCode.USAGE  # click's: --sql missing
    refused = run(requester, "query", "--grant", GRANT, "--sql", "SELECT * FROM tax.declarations")
    assert refused.exit_code == ExitCode.REFUSED and "RAW_ROWS" in refused.output
    missing = run(requester, "request", "show", "req-nothing")
    assert missing.exit_code == ExitCode.NOT_FOUND and "NOT_FOUND" in missing.output, missing.output
    down = run({**requester, "DSBROKER_BROKER": "127.0.0.1:1"}, "query", "--timeout", "2", "--grant", GRANT, "--sql",
               SQL)
    assert down.exit_code == ExitCode.UNAVAILABLE and "UNAVAILABLE" in down.output
    forged = run({**requester, "DSBROKER_TOKEN": token_for()[:-4] + "AAAA"}, "query", "--grant", GRANT, "--sql", SQL)
    assert forged.exit_code == ExitCode.UNAUTHENTICATED
    broken = tmp_path / "broken.yaml"
    broken.write_text((POLICIES / f"{GRANT}.yaml").read_text().replace("grantee:", "grantee_typo:"))
    assert run(requester, "policy", "lint", str(broken)).exit_code == ExitCode.CHECK_FAILED
    log = tmp_path / "log.sqlite"
    written = writing_log(log)
    written.append(AccessRecord(event="query.decision", decision="allow", department="d"))
    written.close()
    unpinned = run({**requester, "DSBROKER_AUDIT_KEY": None}, "audit", "verify", "--log", str(log))
    assert unpinned.exit_code == ExitCode.NOT_VERIFIED, unpinned.output


def test_the_help_lists_the_exit_codes_and_version_prints_both_versions():
    helped = run({}, "--help")
    assert "Exit codes" in helped.output and "7  a check found problems" in helped.output
    version = run({}, "--version")
    assert version.exit_code == 0 and version.output.startswith("dsbroker 0.") and "broker.v1" in version.output


# -- --json on the checks ------------------------------------------------------------------------------

def test_verify_reconcile_and_lint_print_json(tmp_path):
    log = tmp_path / "log.sqlite"
    written = writing_log(log)
    written.append(AccessRecord(event="query.decision", decision="allow", department="d"))
    written.close()
    key = tmp_path / "log.pub"
    from cryptography.hazmat.primitives import serialization

    key.write_bytes(log_key().public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    verified = run({}, "audit", "verify", "--log", str(log), "--pinned-key", str(key), "--json")
    report = json.loads(verified.output)
    assert verified.exit_code == 0 and report["intact"] and report["verified"] and report["exit_code"] == 0
    ledger = tmp_path / "ledger.sqlite"
    from sandbox.ledgers.executions import ExecutionLedger

    ExecutionLedger(ledger).close()
    reconciled = run({}, "audit", "reconcile", "--log", str(log), "--ledger", str(ledger), "--json")
    answer = json.loads(reconciled.output)
    assert reconciled.exit_code == ExitCode.CHECK_FAILED and answer["reconciled"] is False
    assert {p["kind"] for p in answer["problems"]} and all(p["ledger"] == str(ledger) for p in answer["problems"])
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text((POLICIES / f"{GRANT}.yaml").read_text())
    bad.write_text(good.read_text().replace("grantee:", "grantee_typo:"))
    linted = run({}, "policy", "lint", str(good), str(bad), "--json")
    files = {f["file"]: f for f in json.loads(linted.output)["files"]}
    assert linted.exit_code == ExitCode.CHECK_FAILED and files[str(good)]["ok"] and not files[str(bad)]["ok"]
    assert files[str(good)]["policy"] == f"{GRANT} v1" and files[str(bad)]["error"]


# -- spreadsheets and money ------------------------------------------------------------------------------

def exact_yuan(fen: int) -> str:
    return f"{Decimal(fen) / 100:,.2f}"


def test_query_as_csv_for_excel_has_a_bom_and_keeps_chinese(requester, tmp_path):
    out = tmp_path / "result.csv"
    written = run(requester, "query", "--grant", GRANT, "--sql", SQL, "--output", "csv", "--out", str(out))
    assert written.exit_code == 0, written.output
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0] == "street_code,n,vat (元)"
    answer = json.loads(run(requester, "query", "--grant", GRANT, "--sql", SQL, "--json").output)
    first = answer["rows"][0]
    assert lines[1].split(",")[:2] == [str(first[0]), str(first[1])]
    assert Decimal(lines[1].split(",")[2]) * 100 == first[2]  # 元 to the fen, exactly


def test_query_as_xlsx_keeps_numbers_as_numbers_with_money_formatted(requester, tmp_path):
    out = tmp_path / "result.xlsx"
    refused = run(requester, "query", "--grant", GRANT, "--sql", SQL, "--output", "xlsx")
    assert refused.exit_code == ExitCode.USAGE and "--out" in refused.output
    assert run(requester, "query", "--grant", GRANT, "--sql", SQL, "-o", "xlsx", "--out", str(out)).exit_code == 0
    answer = json.loads(run(requester, "query", "--grant", GRANT, "--sql", SQL, "--json").output)
    sheet = load_workbook(out).active
    header = [c.value for c in sheet[1]]
    assert header == ["street_code", "n", "vat (元)"] and all(c.font.bold for c in sheet[1])
    street, count, vat = sheet[2]
    assert street.value == answer["rows"][0][0] and isinstance(count.value, int) and count.value == answer["rows"][0][1]
    assert isinstance(vat.value, float) and vat.value == pytest.approx(answer["rows"][0][2] / 100, abs=0.001)
    assert "元" in vat.number_format and "#,##0.00" in vat.number_format


def test_money_is_shown_in_yuan_or_wan_right_aligned_and_json_keeps_fen(requester):
    answer = json.loads(run(requester, "query", "--grant", GRANT, "--sql", SQL, "--json").output)
    fen = answer["rows"][0][2]
    assert isinstance(fen, int)  # JSON: exact integers in fen
    table = run({**requester, "COLUMNS": "200"}, "query", "--grant", GRANT, "--sql", SQL)
    assert table.exit_code == 0 and "vat (元)" in table.output and exact_yuan(fen) in table.output
    line = next(line for line in table.output.splitlines() if exact_yuan(fen) in line)
    assert f"{exact_yuan(fen)} │" in line or line.rstrip().endswith(exact_yuan(fen) + " │")  # right-aligned
    wan = run({**requester, "COLUMNS": "200"}, "query", "--grant", GRANT, "--sql", SQL, "--unit", "wan")
    assert "vat (万元)" in wan.output and money_text(fen, "wan", "en") in wan.output


def test_money_text_is_exact_from_fen():
    assert money_text(123_456_789_012_345, "yuan", "zh_CN") == "1,234,567,890,123.45"
    assert money_text(5, "yuan", "en") == "0.05" and money_text(-123_456, "yuan", "en") == "-1,234.56"
    assert money_text(123_456_789, "wan", "en") == "123.46"  # 1,234,567.89 元, to the hundred 元, half up
    assert money_text(4_999, "wan", "en") == "0.00" and money_text(5_000, "wan", "en") == "0.01"


def test_money_columns_are_the_sums_of_columns_in_fen():
    units = {"vat_paid": "fen", "cit_paid": "fen", "employees": "persons"}
    sql = ("SELECT street_code, SUM(vat_paid) AS vat, COUNT(*) AS n, SUM(vat_paid) - SUM(cit_paid) AS net, "
           "AVG(employees) AS staff, SUM(vat_paid) / COUNT(*) AS per FROM tax.declarations GROUP BY 1")
    assert money_columns(sql, lambda table: units if table == "tax.declarations" else {}) == {1, 3}


def test_money_columns_ask_the_catalog_once_per_table_and_never_for_a_cte():
    """Each catalog read is an RPC the access log records: a table joined twice is read once, and a WITH's own
    name (which no catalog describes) is not asked for at all."""
    asked: list[str] = []

    def units_of(table: str) -> dict[str, str]:
        asked.append(table)
        return {"vat_paid": "fen"} if table == "tax.declarations" else {}

    sql = ("WITH cells AS (SELECT d.street_code, SUM(d.vat_paid) AS vat FROM tax.declarations d "
           "JOIN tax.streets s ON d.street_code = s.street_code JOIN tax.streets t ON d.street_code = t.street_code "
           "GROUP BY 1) SELECT street_code, vat FROM cells, cells AS again")
    assert money_columns(sql, units_of) == {1}
    assert sorted(asked) == ["tax.declarations", "tax.streets"]


# -- time zones -----------------------------------------------------------------------------------------

UTC = dt.timezone.utc


@pytest.fixture
def dated_log(tmp_path):
    """A log with records at known moments: 23:00 and 01:00 Beijing time either side of 1 December's midnight."""
    path = tmp_path / "dated.sqlite"
    log = AccessLog(str(path), signing_key=log_key())
    for at, department in ((dt.datetime(2026, 11, 30, 15, 0, tzinfo=UTC), "before"),  # 30 Nov 23:00 +08:00
                           (dt.datetime(2026, 11, 30, 17, 0, tzinfo=UTC), "玄武区发改委"),  # 1 Dec 01:00 +08:00
                           (dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "after")):  # 1 Dec 17:00 +08:00
        log.append(AccessRecord(event="query.decision", decision="allow", department=department), now=at)
    log.close()
    return str(path)


def departments(result) -> list[str]:
    return [json.loads(line)["department"] for line in result.output.splitlines()]


def test_since_without_an_offset_is_read_in_beijing_time(dated_log):
    env = {"DSBROKER_TZ": None}
    beijing = run(env, "audit", "list", "--log", dated_log, "--since", "2026-12-01", "--json")
    assert departments(beijing) == ["玄武区发改委", "after"]
    utc = run(env, "--tz", "UTC", "audit", "list", "--log", dated_log, "--since", "2026-12-01", "--json")
    assert departments(utc) == ["after"]
    offset = run(env, "audit", "list", "--log", dated_log, "--since", "2026-12-01T00:00+00:00", "--json")
    assert departments(offset) == ["after"]
    until = run({"DSBROKER_TZ": "UTC"}, "audit", "list", "--log", dated_log, "--until", "2026-12-01", "--json")
    assert departments(until) == ["before", "玄武区发改委"]


def test_times_are_shown_with_their_offset_in_the_owners_zone(dated_log, tmp_path):
    shown = run({"DSBROKER_TZ": None, "COLUMNS": "250"}, "audit", "list", "--log", dated_log)
    assert "2026-12-01 01:00:00+08:00" in shown.output and "2026-11-30 23:00:00+08:00" in shown.output
    out = tmp_path / "records.csv"
    assert run({}, "audit", "list", "--log", dated_log, "--output", "csv", "--out", str(out)).exit_code == 0
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and "玄武区发改委" in data.decode("utf-8-sig")
    assert ",2026-12-01 01:00:00+08:00," in data.decode("utf-8-sig")
    exported = tmp_path / "export.xlsx"
    assert run({}, "audit", "export", "--log", dated_log, "--format", "xlsx", "--out", str(exported)).exit_code == 0
    sheet = load_workbook(exported).active
    header = [c.value for c in sheet[1]]
    row = {h: c.value for h, c in zip(header, sheet[3], strict=True)}
    assert row["department"] == "玄武区发改委" and row["at_local"] == "2026-12-01 01:00:00+08:00"
    assert row["at"].startswith("2026-11-30T17:00:00") and isinstance(row["seq"], int)
    bad = run({}, "--tz", "Mars/Olympus", "audit", "list", "--log", dated_log)
    assert bad.exit_code == ExitCode.USAGE and "not a time zone" in bad.output


def test_the_profiles_time_zone_comes_after_the_flag_and_the_environment(dated_log, config):
    # A token command that fails: reading a log file directly needs no token, so it is not run.
    run(only_config(config), "profile", "add", "utc", "--broker", "127.0.0.1:1", "--plaintext", "--tz", "UTC",
        "--token-command", f"{sys.executable} -c 'raise SystemExit(1)'")
    env = only_config(config, DSBROKER_TZ=None)
    from_profile = run(env, "audit", "list", "--log", dated_log, "--since", "2026-12-01", "--json")
    assert from_profile.exit_code == 0, from_profile.output
    assert departments(from_profile) == ["after"]
    from_env = run({**env, "DSBROKER_TZ": "Asia/Shanghai"}, "audit", "list", "--log", dated_log, "--since",
                   "2026-12-01", "--json")
    assert departments(from_env) == ["玄武区发改委", "after"]
    from_flag = run({**env, "DSBROKER_TZ": "UTC"}, "--tz", "Asia/Shanghai", "audit", "list", "--log", dated_log,
                    "--since", "2026-12-01", "--json")
    assert departments(from_flag) == ["玄武区发改委", "after"]


def test_a_static_token_is_stored_privately_and_never_shown(broker, config):
    token = token_for()
    keys = dev_keys()
    added = run(only_config(config), "profile", "add", "static", "--broker", f"127.0.0.1:{broker.port}", "--ca",
                str(keys.platform_ca), "--cert", str(keys.client_cert(ANALYST)), "--key",
                str(keys.client_key(ANALYST)), "--token", token)
    assert added.exit_code == 0 and stat.S_IMODE(config.stat().st_mode) == 0o600
    shown = run(only_config(config), "profile", "show", "static")
    assert token not in shown.output and "(set)" in shown.output
    assert run(only_config(config), "query", "--grant", GRANT, "--sql", SQL, "--json").exit_code == 0
    both = run(only_config(config), "profile", "add", "x", "--token", "t", "--token-command", "echo t")
    assert both.exit_code == ExitCode.USAGE and "exclude each other" in both.output


def test_the_readme_lists_every_exit_code():
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("**Exit codes**"):readme.index("| command | what it does |")]
    assert [int(line.split("|")[1]) for line in table.splitlines() if line[:3] in {f"| {c}" for c in range(10)}] \
        == [int(code) for code in ExitCode]
