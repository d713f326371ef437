"""Synthetic tax records that look real: Nanjing's districts and streets, GB/T 4754-2017
industries, valid unified social credit codes, and heavy-tailed monthly declarations in fen.

Taxpayers are drawn in Python (seeded, so a file is reproducible), in chunks of
:data:`TAXPAYER_CHUNK` written out as they are drawn; the monthly declarations are
generated inside DuckDB from them, one month at a time, so a hundred million rows
never pass through Python and the memory a file takes to make stays bounded (about
100 bytes a taxpayer for the ids drawn so far, and DuckDB's :data:`BUILD_MEMORY_LIMIT`).
Nothing here is real taxpayer data.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import duckdb

from dsbroker.private_files import built_privately
from sandbox.demo.uscc import make_uscc

# Nanjing (南京市, 3201): districts with their 6-digit codes and their streets (街道).
# Street codes follow the GB/T 10114 layout, district code + 3 digits, numbered in list order.
DISTRICTS: dict[str, tuple[str, list[str]]] = {
    "320102": ("玄武区", ["梅园新村街道", "新街口街道", "玄武门街道", "锁金村街道", "红山街道", "孝陵卫街道",
                         "玄武湖街道"]),
    "320104": ("秦淮区", ["秦虹街道", "夫子庙街道", "双塘街道", "中华门街道", "五老村街道", "洪武路街道", "大光路街道",
                         "瑞金路街道", "月牙湖街道", "光华路街道", "朝天宫街道", "红花街道"]),
    "320105": ("建邺区", ["南苑街道", "兴隆街道", "沙洲街道", "双闸街道", "江心洲街道", "莫愁湖街道"]),
    "320106": ("鼓楼区", ["宁海路街道", "华侨路街道", "湖南路街道", "中央门街道", "挹江门街道", "江东街道", "凤凰街道",
                         "阅江楼街道", "热河南路街道", "幕府山街道", "建宁路街道", "宝塔桥街道", "小市街道"]),
    "320111": ("浦口区", ["江浦街道", "顶山街道", "沿江街道", "泰山街道", "盘城街道", "桥林街道", "汤泉街道",
                         "永宁街道", "星甸街道"]),
    "320113": ("栖霞区", ["尧化街道", "马群街道", "迈皋桥街道", "燕子矶街道", "栖霞街道", "龙潭街道", "仙林街道",
                         "八卦洲街道", "西岗街道"]),
    "320114": ("雨花台区", ["雨花街道", "赛虹桥街道", "西善桥街道", "板桥街道", "铁心桥街道", "梅山街道"]),
    "320115": ("江宁区", ["东山街道", "秣陵街道", "汤山街道", "淳化街道", "禄口街道", "江宁街道", "谷里街道",
                         "湖熟街道", "横溪街道", "麒麟街道"]),
    "320116": ("六合区", ["雄州街道", "龙池街道", "程桥街道", "葛塘街道", "长芦街道", "龙袍街道", "金牛湖街道",
                         "横梁街道"]),
    "320117": ("溧水区", ["永阳街道", "柘塘街道", "东屏街道", "石湫街道", "洪蓝街道", "白马镇"]),
    "320118": ("高淳区", ["淳溪街道", "古柏街道", "漆桥街道", "固城街道", "东坝街道", "桠溪街道"]),
}
# Relative density of taxpayers per district (central districts are denser).
DISTRICT_WEIGHTS = {"320102": 14, "320104": 14, "320105": 12, "320106": 18, "320111": 6, "320113": 9,
                    "320114": 8, "320115": 12, "320116": 3, "320117": 2, "320118": 2}

# GB/T 4754-2017 divisions (行业大类): code, section, name, weight, VAT rate, profit margin.
INDUSTRIES: list[tuple[str, str, str, float, float, float]] = [
    ("13", "C", "农副食品加工业", 2, 0.09, 0.05), ("15", "C", "酒、饮料和精制茶制造业", 1, 0.13, 0.12),
    ("26", "C", "化学原料和化学制品制造业", 2, 0.13, 0.08), ("27", "C", "医药制造业", 2, 0.13, 0.15),
    ("34", "C", "通用设备制造业", 3, 0.13, 0.07), ("35", "C", "专用设备制造业", 3, 0.13, 0.08),
    ("36", "C", "汽车制造业", 2, 0.13, 0.06), ("38", "C", "电气机械和器材制造业", 3, 0.13, 0.07),
    ("39", "C", "计算机、通信和其他电子设备制造业", 4, 0.13, 0.06), ("40", "C", "仪器仪表制造业", 1, 0.13, 0.10),
    ("44", "D", "电力、热力生产和供应业", 1, 0.13, 0.09), ("47", "E", "房屋建筑业", 3, 0.09, 0.04),
    ("48", "E", "土木工程建筑业", 2, 0.09, 0.05), ("51", "F", "批发业", 14, 0.13, 0.03),
    ("52", "F", "零售业", 12, 0.13, 0.04), ("54", "G", "道路运输业", 3, 0.09, 0.05),
    ("61", "H", "住宿业", 2, 0.06, 0.06), ("62", "H", "餐饮业", 8, 0.06, 0.07),
    ("64", "I", "互联网和相关服务", 4, 0.06, 0.12), ("65", "I", "软件和信息技术服务业", 9, 0.06, 0.14),
    ("66", "J", "货币金融服务", 1, 0.06, 0.25), ("67", "J", "资本市场服务", 1, 0.06, 0.20),
    ("70", "K", "房地产业", 3, 0.09, 0.10), ("72", "L", "商务服务业", 9, 0.06, 0.09),
    ("73", "M", "研究和试验发展", 2, 0.06, 0.10), ("74", "M", "专业技术服务业", 4, 0.06, 0.11),
    ("75", "M", "科技推广和应用服务业", 4, 0.06, 0.10), ("83", "P", "教育", 2, 0.06, 0.08),
    ("84", "Q", "卫生", 1, 0.06, 0.09), ("88", "R", "文化艺术业", 2, 0.06, 0.07),
]
SECTIONS = {"C": "制造业", "D": "电力、热力、燃气及水生产和供应业", "E": "建筑业", "F": "批发和零售业",
            "G": "交通运输、仓储和邮政业", "H": "住宿和餐饮业", "I": "信息传输、软件和信息技术服务业", "J": "金融业",
            "K": "房地产业", "L": "租赁和商务服务业", "M": "科学研究和技术服务业", "P": "教育", "Q": "卫生和社会工作",
            "R": "文化、体育和娱乐业"}
# 登记注册类型 (registration types) with weights.
REGISTRATION_TYPES = [("110", "国有企业", 2), ("120", "集体企业", 1), ("151", "国有独资公司", 1),
                      ("159", "其他有限责任公司", 20), ("160", "股份有限公司", 4), ("173", "私营有限责任公司", 60),
                      ("174", "私营股份有限公司", 4), ("210", "与港澳台商合资经营企业", 2),
                      ("310", "中外合资经营企业", 2), ("330", "外资企业", 4)]
_NAME_PARTS = ["金陵", "钟山", "秦淮", "紫金", "石城", "玄武", "栖霞", "长江", "宁海", "鼓楼", "莫愁", "雨花", "江宁",
               "汇通", "华泰", "恒信", "锦程", "博远", "中和", "新禾", "天成", "瑞丰", "嘉诚", "正元", "启明", "同创"]
_NAME_SUFFIX = {"C": "制造", "D": "能源", "E": "建设", "F": "商贸", "G": "物流", "H": "餐饮", "I": "科技",
                "J": "金融服务", "K": "置业", "L": "商务咨询", "M": "技术", "P": "教育科技", "Q": "医疗",
                "R": "文化传媒"}

FIRST_PERIOD = dt.date(2024, 1, 1)
# Taxpayers drawn at once: up to this many the draws are those of one chunk, so every file of at most this many
# taxpayers (the bench's 1.15M- and 10.3M-row sizes among them) is the one it always was.
TAXPAYER_CHUNK = 500_000
# What DuckDB may use while it builds the file (a month of 100M rows is about 4M rows to sort): bounded, where
# DuckDB's own default is 80% of the machine's memory.
BUILD_MEMORY_LIMIT = "4GB"


def street_codes() -> list[tuple[str, str, str]]:
    """(street_code, street_name, district_code) for every street, codes numbered per district."""
    return [(f"{district}{index:03d}", name, district)
            for district, (_, streets) in DISTRICTS.items() for index, name in enumerate(streets, start=1)]


def make_demo_data(path: str | Path, *, taxpayers: int = 20_000, months: int = 24, seed: int = 20261121,
                   progress: Callable[[str], None] = lambda _msg: None) -> dict[str, int]:
    """Write a DuckDB file of synthetic tax records; returns row counts per table.

    Builds into a temporary file and renames it into place, so a half-built file is never left behind; the
    file is readable by the owner only (0600), as it holds the companies' names.
    """
    if taxpayers < 100 or months < 1:
        raise ValueError("make at least 100 taxpayers and 1 month")
    path = Path(path)
    rng = random.Random(seed)
    started = time.perf_counter()
    # tax.taxpayers holds the companies' names: the file is the owner's alone (0600), even while it is built.
    with tempfile.TemporaryDirectory() as scratch, built_privately(path) as partial:
        staging = Path(scratch) / "taxpayers.csv"
        progress(f"drawing {taxpayers:,} taxpayers")
        _write_taxpayers(staging, taxpayers, rng, progress=progress)
        con = duckdb.connect(str(partial))
        try:
            con.execute("SET preserve_insertion_order = false")
            con.execute(f"SET memory_limit = '{BUILD_MEMORY_LIMIT}'")
            con.execute("SET enable_progress_bar = false")  # progress() reports each month instead
            _create_lookups(con)
            con.execute(f"CREATE TEMP TABLE staging AS SELECT * FROM read_csv('{staging}', header = true, "
                        "all_varchar = false, types = {'taxpayer_id': 'VARCHAR', 'district_code': 'VARCHAR', "
                        "'street_code': 'VARCHAR', 'industry_code': 'VARCHAR', 'registration_type': 'VARCHAR'})")
            con.execute("""
                CREATE TABLE tax.taxpayers AS
                SELECT taxpayer_id, name, district_code, street_code, industry_code, industry_section,
                       registration_type, size_class, registered_on
                FROM staging ORDER BY taxpayer_id""")
            progress(f"generating {months} months of declarations")
            _create_declarations(con, months, progress=progress)
            counts = {table: con.execute(f"SELECT count(*) FROM tax.{table}").fetchone()[0]
                      for table in ("districts", "streets", "industries", "registration_types", "taxpayers",
                                    "declarations")}
            con.execute("CHECKPOINT")
        finally:
            con.close()
    write_demo_catalog(path)
    progress(f"wrote {counts['declarations']:,} declarations in {time.perf_counter() - started:.1f}s to {path}")
    return counts


# The tables a sandbox over the demo data serves: the declarations and the public code lists a grant
# may join. Never tax.taxpayers, which holds the companies' names.
DEMO_DATASETS = ("tax.declarations", "tax.streets", "tax.industries", "tax.registration_types", "tax.districts")


def split_demo_data(source: str | Path, names: list[str], directory: str | Path) -> list[Path]:
    """Write ``<directory>/<name>.duckdb`` for each name: partitions of ``source``'s taxpayers, as if
    each tax office kept the taxpayers registered with it.

    A taxpayer goes to one partition (by a hash of its id), with its declarations; every partition gets
    the lookup tables whole. Existing partition files are kept. Returns the paths, in ``names``' order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.duckdb" for name in names]
    # Read a copy: this process may hold the source open already (a sandbox's locked-down engine), and
    # DuckDB shares one instance per file within a process.
    with tempfile.TemporaryDirectory() as scratch, \
            duckdb.connect(shutil.copy(source, Path(scratch) / "source.duckdb"), read_only=True) as con:
        for index, path in enumerate(paths):
            if path.exists():
                continue
            with built_privately(path) as partial:  # 0600, like the file it is split from
                con.execute(f"ATTACH '{partial}' AS part (READ_WRITE)")
                try:
                    con.execute("CREATE SCHEMA part.tax")
                    for table in ("districts", "streets", "industries", "registration_types"):
                        con.execute(f"CREATE TABLE part.tax.{table} AS SELECT * FROM tax.{table}")
                    for table in ("taxpayers", "declarations"):
                        con.execute(f"CREATE TABLE part.tax.{table} AS SELECT * FROM tax.{table} "
                                    f"WHERE hash(taxpayer_id) % {len(paths)} = {index}")
                finally:
                    con.execute("DETACH part")
            write_demo_catalog(path)
    return paths


def write_demo_catalog(data: str | Path) -> Path:
    """Write the owner's catalog of the demo data beside the data file; returns its path."""
    from sandbox.catalog import catalog_path_for

    target = catalog_path_for(data)
    target.write_text((Path(__file__).with_name("catalog.yaml")).read_text(encoding="utf-8"), encoding="utf-8")
    return target


def _write_taxpayers(staging: Path, count: int, rng: random.Random, *,
                     progress: Callable[[str], None] = lambda _msg: None) -> None:
    streets = street_codes()
    street_weights = [DISTRICT_WEIGHTS[d] / len(DISTRICTS[d][1]) * rng.uniform(0.4, 1.6) for _, _, d in streets]
    industry_weights = [weight for _, _, _, weight, _, _ in INDUSTRIES]
    registration_weights = [w for *_, w in REGISTRATION_TYPES]
    seen: set[str] = set()  # the ids drawn so far, to keep them unique: the one part that grows with the count
    first_day = FIRST_PERIOD - dt.timedelta(days=365 * 20)
    with staging.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["taxpayer_id", "name", "district_code", "street_code", "industry_code", "industry_section",
                         "registration_type", "size_class", "registered_on", "scale", "vat_rate", "margin",
                         "employees"])
        for start in range(0, count, TAXPAYER_CHUNK):
            chunk = min(TAXPAYER_CHUNK, count - start)
            if start:
                progress(f"  {start:,} of {count:,} taxpayers drawn")
            for street, industry, registration in zip(
                    rng.choices(streets, street_weights, k=chunk), rng.choices(INDUSTRIES, industry_weights, k=chunk),
                    rng.choices(REGISTRATION_TYPES, registration_weights, k=chunk), strict=True):
                writer.writerow(_taxpayer_row(street, industry, registration, rng, seen, first_day))


def _taxpayer_row(street, industry, registration, rng: random.Random, seen: set[str], first_day: dt.date) -> list:
    """One taxpayer's CSV row, its id drawn until it is not in ``seen`` (then added to it)."""
    street_code, _, district = street
    code, section, _, _, vat_rate, margin = industry
    taxpayer_id = make_uscc(rng, district)
    while taxpayer_id in seen:
        taxpayer_id = make_uscc(rng, district)
    seen.add(taxpayer_id)
    # Monthly revenue in fen: Pareto-tailed around 80,000 yuan, a few dominant enterprises per cell.
    scale = min(rng.paretovariate(1.1), 20_000) * 8_000_000
    if rng.random() < 0.004:
        scale *= 25
    size = "large" if scale > 4e9 else "medium" if scale > 6e8 else "small" if scale > 6e7 else "micro"
    employees = max(1, int(scale / 1_500_000 * rng.uniform(0.3, 1.7)))
    registered = first_day + dt.timedelta(days=rng.randrange(365 * 22))
    name = f"南京{rng.choice(_NAME_PARTS)}{rng.choice(_NAME_PARTS)}{_NAME_SUFFIX[section]}有限公司"
    return [taxpayer_id, name, district, street_code, code, section, registration[0], size,
            registered.isoformat(), int(scale), vat_rate, margin, employees]


def _create_lookups(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA tax")
    con.execute("CREATE TABLE tax.districts (district_code VARCHAR PRIMARY KEY, district_name VARCHAR, city VARCHAR)")
    con.executemany("INSERT INTO tax.districts VALUES (?, ?, '南京市')", [(c, n) for c, (n, _) in DISTRICTS.items()])
    con.execute("CREATE TABLE tax.streets (street_code VARCHAR PRIMARY KEY, street_name VARCHAR, "
                "district_code VARCHAR)")
    con.executemany("INSERT INTO tax.streets VALUES (?, ?, ?)", street_codes())
    con.execute("CREATE TABLE tax.industries (industry_code VARCHAR PRIMARY KEY, industry_name VARCHAR, "
                "industry_section VARCHAR, section_name VARCHAR)")
    con.executemany("INSERT INTO tax.industries VALUES (?, ?, ?, ?)",
                    [(c, n, s, SECTIONS[s]) for c, s, n, *_ in INDUSTRIES])
    con.execute("CREATE TABLE tax.registration_types (registration_type VARCHAR PRIMARY KEY, type_name VARCHAR)")
    con.executemany("INSERT INTO tax.registration_types VALUES (?, ?)", [(c, n) for c, n, _ in REGISTRATION_TYPES])


def _create_declarations(con: duckdb.DuckDBPyConnection, months: int, *,
                         progress: Callable[[str], None] = lambda _msg: None) -> None:
    """tax.declarations, one month at a time in period order, each month's rows ordered by street: the order one
    sort of the whole table by (period, street_code) gives, with a month's rows to sort at a time."""
    started = time.perf_counter()
    for month in range(months):
        statement = "CREATE TABLE tax.declarations AS" if month == 0 else "INSERT INTO tax.declarations"
        con.execute(f"{statement} {_month_of_declarations(month)}")
        if months > 1:
            rows = con.execute("SELECT count(*) FROM tax.declarations").fetchone()[0]
            progress(f"  month {month + 1} of {months}: {rows:,} declarations ({time.perf_counter() - started:.0f}s)")


def _month_of_declarations(month: int) -> str:
    """The SELECT of month ``month``'s declarations (0 is FIRST_PERIOD), ordered by street."""
    # Deterministic per-row noise from a hash of (taxpayer, period): reproducible at any thread count.
    return f"""
        WITH rows AS (
            SELECT s.*, m.period,
                   (hash(s.taxpayer_id, m.period) % 1000000) / 1e6 AS u1,
                   (hash(m.period, s.taxpayer_id) % 1000000) / 1e6 AS u2,
                   1 + 0.15 * sin(2 * pi() * month(m.period) / 12)
                     + CASE WHEN month(m.period) = 12 THEN 0.25 ELSE 0 END AS season
            FROM staging s
            JOIN (SELECT CAST(DATE '{FIRST_PERIOD.isoformat()}' + to_months(CAST({int(month)} AS INTEGER)) AS DATE)
                  AS period) m ON m.period >= date_trunc('month', s.registered_on)
        ), amounts AS (
            SELECT *, CAST(scale * season * (0.55 + 0.9 * u1) AS BIGINT) AS revenue FROM rows
        )
        SELECT taxpayer_id, period, district_code, street_code, industry_code, industry_section,
               registration_type, size_class,
               revenue,
               CAST(revenue * vat_rate * (0.25 + 0.35 * u2) AS BIGINT) AS vat_paid,
               CASE WHEN month(period) IN (1, 4, 7, 10)
                    THEN CAST(revenue * 3 * margin * 0.25 * (0.5 + u2) AS BIGINT) ELSE 0 END AS cit_paid,
               CAST(employees * 650000 * 0.04 * (0.8 + 0.4 * u1) AS BIGINT) AS iit_withheld,
               CAST(greatest(1, employees * (0.9 + 0.2 * u2)) AS INTEGER) AS employees
        FROM amounts
        ORDER BY street_code
    """
