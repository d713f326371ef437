"""The CLI in Chinese: help, headings and messages in zh-CN from the environment's locale or --lang, and a
translation catalog that is complete and compiled."""

from __future__ import annotations

import json

import pytest
from babel.messages.pofile import read_po
from click.testing import CliRunner

from broker.access_log.log import AccessLog
from broker.cli.main import main
from broker.cli.messages import mo_bytes, msgids, po_bytes, po_path, updated_catalog
from dsbroker.records.access_record import AccessRecord
from tests.conftest import GRANT, XUANWU, log_key
from tests.test_cli_workflow import as_actor

# Each test says which language it wants: nothing of the machine's own locale leaks in.
NO_LOCALE = {"LANGUAGE": None, "LC_ALL": None, "LC_MESSAGES": None, "LANG": None, "DSBROKER_LANG": None}
CHINESE = {**NO_LOCALE, "LANG": "zh_CN.UTF-8"}


def run(env, *args):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_every_message_has_a_translation_and_the_mo_is_compiled_from_the_po():
    catalog = read_po(po_path().open("rb"), locale="zh_CN")
    def translated(message) -> bool:
        entry = catalog.get(message if isinstance(message, str) else message[0])
        return entry is not None and all(entry.string if isinstance(entry.string, tuple) else (entry.string,))

    untranslated = [m for m in msgids() if not translated(m)]
    assert untranslated == [], "run ./scripts/update-messages and translate these"
    assert po_path().read_bytes() == po_bytes(updated_catalog()), "the .po is stale: run ./scripts/update-messages"
    assert po_path().with_suffix(".mo").read_bytes() == mo_bytes(), "the .mo is stale: run ./scripts/update-messages"


def test_every_translation_keeps_the_placeholders_of_its_message():
    catalog = read_po(po_path().open("rb"), locale="zh_CN")
    import string

    def fields(text):
        forms = (text,) if isinstance(text, str) else text  # a plural's forms each keep every placeholder
        return {tuple(sorted(f for _, f, _, _ in string.Formatter().parse(form) if f)) for form in forms}

    assert [m.id for m in catalog if m.id and fields(m.id) != fields(m.string)] == []


def test_help_follows_the_environments_locale_and_lang_overrides_it():
    chinese = run(CHINESE, "--help")
    assert "用法：" in chinese.output and "退出码" in chinese.output and "审计人员" in chinese.output
    assert "Usage:" not in chinese.output
    english = run(CHINESE, "--lang", "en", "--help")
    assert "Usage:" in english.output and "Exit codes" in english.output and "用法" not in english.output
    chosen = run({**NO_LOCALE, "LANG": "C"}, "--lang", "zh-CN", "query", "--help")
    assert "以元或万元显示金额" in chosen.output and "在授权下运行一条聚合查询" in chosen.output
    assert "用法" not in run({**NO_LOCALE, "LANG": "en_US.UTF-8"}, "query", "--help").output


@pytest.fixture
def log_file(tmp_path):
    path = str(tmp_path / "log.sqlite")
    log = AccessLog(path, signing_key=log_key())
    log.append(AccessRecord(event="query.decision", decision="allow", department="玄武区发改委"))
    log.close()
    return path


def test_table_headings_are_translated(log_file):
    chinese = run({**CHINESE, "COLUMNS": "200"}, "audit", "list", "--log", log_file)
    assert chinese.exit_code == 0 and "序号" in chinese.output and "部门" in chinese.output
    assert "玄武区发改委" in chinese.output and "department" not in chinese.output
    english = run({**NO_LOCALE, "COLUMNS": "200"}, "audit", "list", "--log", log_file)
    assert "department" in english.output and "部门" not in english.output
    as_json = run(CHINESE, "audit", "list", "--log", log_file, "--json")
    assert json.loads(as_json.output)["department"] == "玄武区发改委"  # JSON keys are not translated


def test_a_refusal_is_explained_in_chinese_with_its_reason_and_names_kept(broker):
    env = {**as_actor(f"127.0.0.1:{broker.port}", "xuanwu-fgw", XUANWU, "requester"), **CHINESE}
    refused = run(env, "query", "--grant", GRANT, "--sql", "SELECT vat_paid FROM tax.declarations")
    assert refused.exit_code == 3
    assert refused.output.startswith("错误: INVALID_ARGUMENT RAW_ROWS: 从不发布原始行")
    assert "rule=reject_raw_rows" in refused.output and "table=tax.declarations" in refused.output
    as_json = json.loads(run(env, "query", "--grant", GRANT, "--sql", "SELECT vat_paid FROM tax.declarations",
                             "--json").output)
    assert as_json["error"]["reason"] == "RAW_ROWS" and "raw" in as_json["error"]["message"].lower()
    verified = run({**CHINESE, "DSBROKER_AUDIT_KEY": None}, "--lang", "zh-CN", "audit", "verify", "--log",
                   str(broker.access_log_path))
    assert verified.exit_code == 8 and "访问日志未经验证" in verified.output


def test_a_results_headings_units_and_disclosure_notes_are_in_chinese(broker):
    env = {**as_actor(f"127.0.0.1:{broker.port}", "xuanwu-fgw", XUANWU, "requester"), **CHINESE, "COLUMNS": "200"}
    sql = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"
    answered = run(env, "query", "--grant", GRANT, "--sql", sql, "--unit", "wan")
    assert answered.exit_code == 0, answered.output
    assert "vat (万元)" in answered.output and "不同 taxpayer_id 少于 10 个的单元格不予发布" in answered.output
    assert "（支配规则）" in answered.output and "访问记录 #" in answered.output
    english = run({**env, **NO_LOCALE}, "query", "--grant", GRANT, "--sql", sql)
    assert "vat (元)" in english.output and "distinct taxpayer_id values are withheld" in english.output


def test_the_catalogs_descriptions_are_shown_in_the_language_in_force(broker):
    """The owner describes the demo dataset and its columns in Chinese and English (sandbox/demo/catalog.yaml);
    ``catalog show`` prints the language in force, and --json keeps both."""
    env = {**as_actor(f"127.0.0.1:{broker.port}", "xuanwu-fgw", XUANWU, "requester"), "COLUMNS": "250"}
    chinese = run({**env, **CHINESE}, "catalog", "show", "tax.declarations")
    assert chinese.exit_code == 0, chinese.output
    assert "月度纳税申报" in chinese.output and "纳税人统一社会信用代码" in chinese.output
    assert "Unified social credit code" not in chinese.output
    english = run({**env, **NO_LOCALE}, "catalog", "show", "tax.declarations")
    assert "Monthly tax declarations" in english.output and "Unified social credit code" in english.output
    assert "纳税人统一社会信用代码" not in english.output
    both = json.loads(run({**env, **NO_LOCALE}, "catalog", "show", "tax.declarations", "--json").output)
    column = next(c for c in both["columns"] if c["name"] == "taxpayer_id")
    assert column["description_zh"] == "纳税人统一社会信用代码"
    assert column["description"] == "Unified social credit code of the taxpayer"
