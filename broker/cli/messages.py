"""Every message the CLI translates (its msgids), and the catalogs built from them with Babel.

The msgids are the English texts: each ``_()`` and ``N_()`` in broker/cli and in the web console (its Python
and its Jinja2 templates, broker/console; found by Babel's extractors),
every command's help and every option's help (read from the click tree, as the help prints them), and
the headings click itself prints. ``scripts/update-messages`` writes them into the .po file, keeping its
translations, and compiles the .mo beside it; ``tests/test_cli_chinese.py`` checks both are up to date.
"""

from __future__ import annotations

import datetime as dt
import inspect
import io
from pathlib import Path

import click
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from broker.cli.i18n import DOMAIN, LOCALE_DIR

CLI_DIR = Path(__file__).resolve().parent
CONSOLE_DIR = CLI_DIR.parent / "console"
KEYWORDS = {"_": None, "N_": None, "n_": (1, 2)}
CATALOG_DATE = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
# What click prints around our text (the TranslatedCommand classes print these through _()).
CLICK_MESSAGES = ("Usage: ", "Options", "Commands", "Show this message and exit.")


def po_path(language: str = "zh_CN") -> Path:
    """The .po source of ``language``."""
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def msgids() -> list[str | tuple[str, str]]:
    """Every msgid the CLI can show, sorted (a message with a plural as its two English forms)."""
    from broker.cli.exit_codes import EXIT_CODES
    from broker.cli.main import main

    found: set[str | tuple[str, str]] = set(CLICK_MESSAGES) | {meaning for _code, meaning in EXIT_CODES}
    for _line, message, _comments, _context in _extracted():
        found.add(message)
    _walk(main, found)
    return sorted((m for m in found if m), key=lambda m: m if isinstance(m, str) else m[0])


def _extracted():
    templates = ("templates/*.html", "jinja2.ext:babel_extract")
    for directory, method_map in ((CLI_DIR, [("*.py", "python")]), (CONSOLE_DIR, [("*.py", "python"), templates])):
        for _file, line, message, comments, context in extract_from_dir(str(directory), method_map=method_map,
                                                                         keywords=KEYWORDS):
            if message:
                yield line, message, comments, context


def _walk(command: click.Command, found: set) -> None:
    for text in (command.help, command.short_help, command.epilog):
        if text:
            found.add(inspect.cleandoc(text))
    for param in command.params:
        if getattr(param, "help", None):
            found.add(inspect.cleandoc(param.help))  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _walk(sub, found)


def updated_catalog(language: str = "zh_CN") -> Catalog:
    """The catalog of every msgid, with the translations the .po holds (new ones empty, gone ones dropped)."""
    path = po_path(language)
    old = read_po(path.open("rb"), locale=language) if path.exists() else Catalog(locale=language)
    catalog = Catalog(locale=language, domain=DOMAIN, project="dsbroker", charset="utf-8", fuzzy=False)
    for message in msgids():
        kept = old.get(message if isinstance(message, str) else message[0])
        empty = "" if isinstance(message, str) else ("",)
        catalog.add(message, kept.string if kept is not None and type(kept.string) is type(empty) else empty)
    return catalog


def po_bytes(catalog: Catalog) -> bytes:
    """The .po text of ``catalog``, without dates (so an unchanged catalog writes the same bytes)."""
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=120, omit_header=False, no_location=True, sort_output=True)
    return b"\n".join(line for line in buffer.getvalue().split(b"\n")
                      if not line.startswith((b'"POT-Creation-Date', b'"PO-Revision-Date')))


def mo_bytes(language: str = "zh_CN") -> bytes:
    """The .mo the committed .po compiles to."""
    catalog = read_po(po_path(language).open("rb"), locale=language)
    # Babel writes both dates into the .mo's header, and reads "now" for a .po without them: fixed, so the
    # same .po always compiles to the same bytes.
    catalog.creation_date = catalog.revision_date = CATALOG_DATE
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    return buffer.getvalue()
