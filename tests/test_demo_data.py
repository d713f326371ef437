"""Demo data looks like a tax register: valid credit codes, real codes, 24 months, heavy tails."""

from __future__ import annotations

import random

from sandbox.demo.data import DISTRICTS, INDUSTRIES
from sandbox.demo.uscc import is_valid_uscc, make_uscc, organisation_check, uscc_check


def test_uscc_check_characters_match_the_standards_example():
    assert is_valid_uscc("91350100M000100Y43")
    assert uscc_check("91350100M000100Y4") == "3" and organisation_check("M000100Y") == "4"
    assert not is_valid_uscc("91350100M000100Y44") and not is_valid_uscc("91350100M000100Y53")


def test_generated_codes_are_valid_and_carry_the_district():
    rng = random.Random(7)
    for _ in range(1000):
        code = make_uscc(rng, "320102")
        assert is_valid_uscc(code) and code[2:8] == "320102"


def test_demo_file_shape(direct):
    assert all(is_valid_uscc(c) for (c,) in direct.execute("SELECT taxpayer_id FROM tax.taxpayers").fetchall())
    months = direct.execute("SELECT count(DISTINCT period) FROM tax.declarations").fetchone()[0]
    assert months >= 24
    districts = {d for (d,) in direct.execute("SELECT DISTINCT district_code FROM tax.declarations").fetchall()}
    assert districts == set(DISTRICTS)
    industries = {i for (i,) in direct.execute("SELECT DISTINCT industry_code FROM tax.declarations").fetchall()}
    assert industries <= {code for code, *_ in INDUSTRIES}
    types = dict(direct.execute("SELECT column_name, data_type FROM duckdb_columns() "
                                "WHERE table_name = 'declarations'").fetchall())
    assert all(types[c] == "BIGINT" for c in ("revenue", "vat_paid", "cit_paid", "iit_withheld"))


def test_amounts_are_heavy_tailed_with_dominant_enterprises(direct):
    top_share = direct.execute("""
        SELECT max(share) FROM (
            SELECT street_code, industry_code, max(total) / sum(total) AS share FROM (
                SELECT street_code, industry_code, taxpayer_id, sum(vat_paid) AS total
                FROM tax.declarations GROUP BY ALL) GROUP BY ALL HAVING count(*) >= 10)""").fetchone()[0]
    assert top_share > 0.85, "some cells should be dominated by one enterprise"
    p50, p99 = direct.execute("SELECT quantile_cont(revenue, 0.5), quantile_cont(revenue, 0.99) "
                              "FROM tax.declarations").fetchone()
    assert p99 > 20 * p50


def test_a_file_drawn_in_chunks_a_month_at_a_time_is_whole_unique_and_in_period_and_street_order(
        tmp_path, monkeypatch):
    # The 100M-row bench file is drawn in chunks of taxpayers and built a month at a time; a small chunk here
    # crosses the same boundaries.
    import duckdb

    from sandbox.demo import data

    monkeypatch.setattr(data, "TAXPAYER_CHUNK", 150)
    said: list[str] = []
    counts = data.make_demo_data(tmp_path / "chunked.duckdb", taxpayers=400, months=3, progress=said.append)
    assert counts["taxpayers"] == 400
    assert any("150 of 400 taxpayers drawn" in line for line in said)
    assert any("month 3 of 3" in line for line in said)
    with duckdb.connect(str(tmp_path / "chunked.duckdb"), read_only=True) as con:
        ids = con.execute("SELECT count(DISTINCT taxpayer_id), count(*) FROM tax.taxpayers").fetchone()
        assert ids == (400, 400)
        assert con.execute("SELECT count(*) FROM tax.declarations").fetchone()[0] == counts["declarations"]
        assert con.execute("SELECT count(*) FROM (SELECT period, taxpayer_id FROM tax.declarations "
                           "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0] == 0
        order = con.execute("SELECT period, street_code FROM tax.declarations ORDER BY rowid").fetchall()
        assert order == sorted(order)
