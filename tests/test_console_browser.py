"""The web console in a real browser (Debian's chromium through Selenium and chromedriver): each role's main
path, in Chinese and in English, against a real sandbox and broker, with ``dsbroker console`` started as a
person starts it (their certificate and token; one console per person). A screenshot of each page is saved
in a directory the run prints ("console screenshots: ...").

- a department runs a query in the workspace, sees the released table, its chart and the disclosure rules,
  and downloads the XLSX, which holds the released cells;
- a reviewer and then the owner approve a request, signing in the browser with WebCrypto Ed25519: the grant
  becomes active and answers a query (its signatures verify at the broker and in the sandbox);
- an auditor finds a refused query in the access log, opens its record, and sees verify's verdict.
"""

from __future__ import annotations

import gettext
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from broker.cli.i18n import DOMAIN, LOCALE_DIR
from broker.cli.profiles import Profile, Profiles
from broker.cli.workflow import read_request_file
from broker.console.chart import MOST_BARS
from broker.client.sdk import BrokerClient
from broker.dev.keys import sandbox_settings, signer_key_id
from broker.server import start_broker
from broker.settings import access_log_key_path
from dsbroker.errors import DsbrokerError
from dsbroker.records.checkpoints import public_key_path
from sandbox.demo.data import DEMO_DATASETS
from sandbox.server import start_sandbox
from sandbox.settings import SandboxSettings
from tests.conftest import ANALYST, GRANT, ROOT, XUANWU, broker_settings_for, client_tls, dev_keys, token_for

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
LANGUAGES = ("zh-CN", "en")
# Streets by industry section: some cells have too few taxpayers, or one that dominates, and are withheld.
RELEASED_SQL = ("SELECT street_code, industry_section, COUNT(DISTINCT taxpayer_id) AS taxpayers, SUM(vat_paid) AS vat "
                "FROM tax.declarations GROUP BY street_code, industry_section ORDER BY street_code, industry_section")
REFUSED_SQL = "SELECT taxpayer_id, vat_paid FROM tax.declarations"
WAIT_SECONDS = 20  # a generous bound for a page on a loaded machine; a wait ends as soon as the page is there


def translated(message: str, lang: str) -> str:
    """``message`` as the console shows it in ``lang`` (the CLI's catalog)."""
    if lang == "en":
        return message
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=["zh_CN"]).gettext(message)


@pytest.fixture(scope="module")
def stack(demo_db, tmp_path_factory):
    """A sandbox (its ledgers of its own, for reconcile) and a broker serving the shipped grant."""
    state = tmp_path_factory.mktemp("console-stack")
    sandbox = start_sandbox(SandboxSettings(listen="127.0.0.1:0", data=str(demo_db), datasets=DEMO_DATASETS,
                                            state_dir=str(state / "sandbox"), audit_released_cells=False,
                                            **sandbox_settings(dev_keys())))
    settings = broker_settings_for(sandbox.port, state / "access-log.sqlite")
    try:
        broker = start_broker(settings)
    except BaseException:
        sandbox.stop()
        raise
    broker.target = f"127.0.0.1:{broker.port}"
    broker.pinned_key = public_key_path(access_log_key_path(settings))
    broker.ledger = state / "sandbox" / "executions.sqlite"
    yield broker
    broker.stop()
    sandbox.stop()


@dataclass
class Console:
    """A running ``dsbroker console`` and the sign-in link it printed."""

    process: subprocess.Popen
    url: str

    @property
    def base(self) -> str:
        return self.url.split("/login")[0]


def person(target: str, department: str, district: str, role: str) -> dict[str, str]:
    """The environment a person's console runs with: the broker, their certificate and their token."""
    keys = dev_keys()
    return {"DSBROKER_BROKER": target, "DSBROKER_TOKEN": token_for(department, district, (role,), f"{role}-1"),
            "DSBROKER_CA": str(keys.platform_ca), "DSBROKER_CERT": str(keys.client_cert(ANALYST)),
            "DSBROKER_KEY": str(keys.client_key(ANALYST))}


def start_console(errors: Path, env: dict[str, str], *options: str) -> Console:
    """``dsbroker console`` on a free port, as a separate process (its standard error into ``errors``); returns
    once it printed its link. Only ``env`` says how to reach the broker (no DSBROKER_ variable of the run's)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DSBROKER_")}
    inherited["DSBROKER_CONFIG"] = str(errors.with_name("no-profiles.toml"))  # nobody's own profiles either
    with errors.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "broker.cli.main", "console", *options],
                                   env={**inherited, **env, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT),
                                   stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+/login\?secret=\S+", line)
    if found is None:
        process.kill()
        pytest.fail(f"dsbroker console printed no link: {line!r} {errors.read_text()}")
    return Console(process, found.group(0))


@pytest.fixture(scope="module")
def console_logs(tmp_path_factory) -> Path:
    """Where each console's standard error goes (shown when a page is not what a test waits for)."""
    return tmp_path_factory.mktemp("console-logs")


@pytest.fixture(scope="module")
def consoles(stack, console_logs):
    """One console per person: a department's analyst, the district reviewer, the city owner, an auditor."""
    keys = dev_keys()
    people = {"requester": (("xuanwu-fgw", XUANWU), ()),
              "reviewer": (("xuanwu-tax", XUANWU), ("--key-id", signer_key_id("xuanwu-tax"))),
              "owner": (("city-tax", "320100"), ("--key-id", signer_key_id("city-tax"))),
              "auditor": (("city-audit", "320100"), ("--pinned-key", str(stack.pinned_key), "--ledger",
                                                      str(stack.ledger)))}
    started = {role: start_console(console_logs / f"{role}.log", person(stack.target, *who, role), *options)
               for role, (who, options) in people.items() if role != "auditor"}
    # The auditor's console takes everything from a profile, its token from the profile's token command.
    who, options = people["auditor"]
    config, token = console_logs / "profiles.toml", console_logs / "auditor.token"
    settings = person(stack.target, *who, "auditor")
    token.write_text(settings["DSBROKER_TOKEN"])
    Profiles({"audit": Profile(broker=stack.target, ca=settings["DSBROKER_CA"], cert=settings["DSBROKER_CERT"],
                               key=settings["DSBROKER_KEY"], token_command=f"cat {token}")}).save(config)
    started["auditor"] = start_console(console_logs / "auditor.log", {"DSBROKER_CONFIG": str(config)},
                                       "--profile", "audit", *options)
    started["reviewer"].signing_key = keys.signer_key("xuanwu-tax")
    started["owner"].signing_key = keys.signer_key("city-tax")
    yield started
    for console in started.values():
        console.process.terminate()
        console.process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(request, tmp_path_factory, console_logs):
    """Headless chromium with an empty profile, its downloads in a directory of the module's own."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "no /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("DSBROKER_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("console-downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1800", f"--user-data-dir={tempfile.mkdtemp(prefix='dsbroker-chromium-')}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    driver.downloads = downloads
    driver.screenshots = tmp_path_factory.mktemp("console-screenshots")
    driver.signed_in = set()
    driver.console_logs = console_logs
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    yield driver
    driver.quit()
    if reporter is not None:
        reporter.write_line(f"console screenshots: {driver.screenshots}")


def open_page(browser, console: Console, path: str, lang: str) -> None:
    """Open ``path`` of ``console`` in ``lang`` (signing in with its link the first time)."""
    if console.url not in browser.signed_in:
        browser.get(console.url)
        browser.signed_in.add(console.url)
    browser.get(f"{console.base}/language/{lang}?back={path}")
    assert browser.find_element("tag name", "html").get_attribute("lang") == lang


def shot(browser, name: str) -> Path:
    """A screenshot of the page in the browser, named for the step."""
    path = browser.screenshots / f"{name}.png"
    assert browser.save_screenshot(str(path)), name
    return path


def wait_for(browser, css: str):
    """The element ``css`` once the page shows it."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, WAIT_SECONDS).until(expected_conditions.presence_of_element_located(
            ("css selector", css)))
    except TimeoutException:
        logs = "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}" for log in browser.console_logs.glob("*.log"))
        pytest.fail(f"no {css} on {browser.current_url}: {browser.find_element('tag name', 'body').text[:2000]}{logs}")


def load_by_clicking(browser, element) -> None:
    """Click ``element`` (a link or a form's button) and wait until the page it leads to has replaced this one and
    loaded: a wait for an element both pages hold would otherwise find it on the page being left. The page being
    left is marked in its window object, which the next page does not have (no element reference is held: Chromium
    answers a reference into a replaced document with an inspector error, not always a stale element)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("window.__dsbrokerLeaving = true;")
    element.click()
    WebDriverWait(browser, WAIT_SECONDS).until(lambda driver: driver.execute_script(
        "return window.__dsbrokerLeaving === undefined && document.readyState === 'complete';"))


def department_client(stack) -> BrokerClient:
    return BrokerClient(stack.target, token=token_for(), tls=client_tls())


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_department_runs_a_query_and_downloads_the_released_table_as_xlsx(stack, consoles, browser, lang):
    from openpyxl import load_workbook

    console = consoles["requester"]
    for path in ("/catalog", "/grants", "/requests"):
        open_page(browser, console, path, lang)
        shot(browser, f"{lang}-department{path.replace('/', '-')}")
    open_page(browser, console, "/grants", lang)
    assert GRANT in browser.find_element("tag name", "main").text
    open_page(browser, console, f"/query?grant={GRANT}", lang)
    assert browser.find_element("css selector", "h1").text == translated("Query workspace", lang)
    browser.find_element("id", "sql").send_keys(RELEASED_SQL)
    load_by_clicking(browser, browser.find_element("id", "run"))
    table = wait_for(browser, "#released")
    shot(browser, f"{lang}-department-query-result")

    with department_client(stack) as client:  # the released cells, asked again through the SDK
        released = client.query(GRANT, RELEASED_SQL)
    page_rows = [[cell.text for cell in row.find_elements("tag name", "td")]
                 for row in table.find_elements("css selector", "tbody tr")]
    assert len(page_rows) == len(released.rows) > 0
    withheld_label = translated("withheld", lang)
    assert released.withheld, "the query no longer has a withheld cell to show"
    for r, row in enumerate(page_rows):
        assert row[:2] == released.rows[r][:2]
        for c in (2, 3):
            assert (row[c] == withheld_label) == ((r, c) in released.withheld)
    chart = browser.find_element("css selector", "#chart svg")  # of vat, the money column: one bar a row
    bars, empty = chart.find_elements("css selector", "rect.bar"), chart.find_elements("css selector", "rect.withheld")
    assert len(empty) == sum(1 for r in range(min(len(released.rows), MOST_BARS)) if (r, 3) in released.withheld) > 0
    assert len(bars) + len(empty) == min(len(released.rows), MOST_BARS)
    rules = browser.find_element("id", "rules").text
    assert "min_entities" in rules and "dominance" in rules

    for stale in browser.downloads.glob("*.xlsx"):
        stale.unlink()
    browser.find_element("id", "download-xlsx").click()
    deadline = time.monotonic() + WAIT_SECONDS
    while not list(browser.downloads.glob("*.xlsx")) and time.monotonic() < deadline:
        time.sleep(0.2)
    [workbook_path] = list(browser.downloads.glob("*.xlsx"))
    sheet = load_workbook(workbook_path).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("street_code", "industry_section", "taxpayers", "vat (元)")
    expected = [tuple("x" if (r, c) in released.withheld else (float(Decimal(v) / 100) if c == 3 else v)
                      for c, v in enumerate(row)) for r, row in enumerate(released.rows)]
    assert rows[1:] == expected


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_department_submits_a_request_of_columns_and_a_product_and_sees_its_draft(stack, consoles, browser, lang):
    from selenium.webdriver.support.ui import Select

    console = consoles["requester"]
    open_page(browser, console, "/requests", lang)
    load_by_clicking(browser, browser.find_element("id", "new-request"))
    wait_for(browser, "#request-form")
    shot(browser, f"{lang}-department-new-request")
    purpose = f"monthly revenue by street for the district report ({lang})"
    browser.find_element("id", "purpose").send_keys(purpose)
    for column, use in (("street_code", "group"), ("period", "group"), ("revenue", "measure"),
                        ("vat_paid", "measure"), ("cit_paid", "measure")):
        Select(browser.find_element("id", f"use-{column}")).select_by_value(use)
        browser.find_element("id", f"reason-{column}").send_keys("the report's rows and figures")
    browser.find_element("id", "product-street-revenue-monthly").click()
    browser.find_element("id", "examples").send_keys(
        "SELECT street_code, SUM(revenue) AS revenue FROM tax.declarations GROUP BY street_code")
    load_by_clicking(browser, browser.find_element("id", "submit"))
    state = wait_for(browser, "#state")
    shot(browser, f"{lang}-department-request-submitted")
    assert state.text == "submitted", browser.find_element("tag name", "main").text
    name = browser.find_element("id", "request-name").text
    with BrokerClient(stack.target, token=token_for(roles=("requester",)), tls=client_tls()) as client:
        stored = client.get_request(name)
    assert stored.purpose == purpose and list(stored.products) == ["street-revenue-monthly"]
    assert {c.column for c in stored.columns} == {"street_code", "period", "revenue", "vat_paid", "cit_paid"}
    draft = browser.find_element("id", "draft").text
    assert "street-revenue-monthly:" in draft and "street_code: group" in draft and stored.draft_policy.strip() == \
        draft.strip()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_reviewer_and_the_owner_approve_a_request_signed_in_the_browser(stack, consoles, browser, lang):
    with BrokerClient(stack.target, token=token_for(roles=("requester",)), tls=client_tls()) as client:
        submitted = client.submit_request(read_request_file(str(ROOT / "examples/request.yaml")))
    name = submitted.name.removeprefix("accessRequests/")

    for role, after in (("reviewer", "reviewed"), ("owner", "active")):
        console = consoles[role]
        open_page(browser, console, "/inbox", lang)
        shot(browser, f"{lang}-{role}-inbox")
        load_by_clicking(browser, browser.find_element("link text", name))
        dry_runs = wait_for(browser, "#dry-runs")
        assert len(dry_runs.find_elements("css selector", "li.accepted")) == 2
        assert len(dry_runs.find_elements("css selector", "li.refused")) == 1
        shot(browser, f"{lang}-{role}-request")
        load_by_clicking(browser, browser.find_element("id", "prepare"))
        wait_for(browser, "#key-file").send_keys(str(console.signing_key))
        assert "dsbroker review approve" in browser.find_element("id", "command").text
        shot(browser, f"{lang}-{role}-sign")
        load_by_clicking(browser, browser.find_element("id", "sign"))
        state = wait_for(browser, "#state")
        assert state.text == after, browser.find_element("tag name", "main").text
        shot(browser, f"{lang}-{role}-approved")

    grant = browser.find_element("id", "grant").text
    with department_client(stack) as client:
        answer = client.query(grant, "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations "
                                     "GROUP BY street_code")
    assert answer.rows and answer.policy_version >= 1


@pytest.mark.parametrize("lang", LANGUAGES)
def test_an_auditor_finds_a_refused_query_and_sees_what_verify_found(stack, consoles, browser, lang):
    with department_client(stack) as client, pytest.raises(DsbrokerError) as refused:
        client.query(GRANT, REFUSED_SQL)
    console = consoles["auditor"]
    open_page(browser, console, "/audit", lang)
    browser.find_element("id", "event").send_keys("query.decision")
    browser.find_element("css selector", "#decision option[value=deny]").click()
    load_by_clicking(browser, browser.find_element("id", "filter"))
    rows = wait_for(browser, "#records").find_elements("css selector", "tbody tr.decision-deny")
    shot(browser, f"{lang}-auditor-log")
    found = [row for row in rows if refused.value.reason in row.text]
    assert found, [row.text for row in rows]
    load_by_clicking(browser, found[-1].find_element("css selector", "a"))
    record = wait_for(browser, "#record").text
    assert REFUSED_SQL in record and refused.value.reason in record and "xuanwu-fgw" in record
    shot(browser, f"{lang}-auditor-record")

    open_page(browser, console, "/audit/verify", lang)
    verdict = wait_for(browser, "#verdict")
    shot(browser, f"{lang}-auditor-verify")
    assert verdict.get_attribute("class") == "ok", verdict.text
    assert verdict.text.startswith(translated("access log intact: {summary}, verified against {count} pinned "
                                              "key(s)", lang).split("{")[0])
    reconciled = browser.find_element("id", "reconciled")
    assert reconciled.get_attribute("class") == "ok", reconciled.text
