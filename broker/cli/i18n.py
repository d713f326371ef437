"""The CLI's language: English or Chinese (zh-CN) through gettext, chosen per command.

Messages are English in the code (the msgids) and translated from ``locale/zh_CN/LC_MESSAGES/dsbroker.po``,
compiled to the ``.mo`` beside it by ``scripts/update-messages`` (``tests/test_cli_chinese.py`` fails when
the ``.mo`` is stale or a help text has no translation). The language is ``--lang`` when given, else
``$DSBROKER_LANG``, else gettext's reading of LANGUAGE, LC_ALL, LC_MESSAGES and LANG (``zh_CN.UTF-8``).
It is looked up when a message is shown, not at import: help text is translated as it is printed.
"""

from __future__ import annotations

import contextvars
import gettext
import os
from pathlib import Path

DOMAIN = "dsbroker"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = {"zh-CN": "zh_CN", "zh_CN": "zh_CN", "zh": "zh_CN", "en": "en"}

# Set by --lang for the command being run, or by the web console for the page being served: a context
# variable, so that two pages served at once (threads, tasks) each keep the language their reader chose.
_chosen: contextvars.ContextVar[str | None] = contextvars.ContextVar("dsbroker_language", default=None)


def set_language(language: str | None) -> None:
    """Use ``language`` (zh-CN or en) for this command; None: the environment decides."""
    _chosen.set(LANGUAGES[language] if language else None)


def _languages() -> list[str] | None:
    chosen = _chosen.get() or LANGUAGES.get(os.environ.get("DSBROKER_LANG", ""))
    return [chosen] if chosen else None  # None: gettext reads LANGUAGE, LC_ALL, LC_MESSAGES, LANG


def translation() -> gettext.NullTranslations:
    """The translation in force now (English, the msgids themselves, when no catalog matches)."""
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=_languages(), fallback=True)


def language() -> str:
    """The language in force now, as Babel names locales: ``zh_CN`` or ``en``."""
    return "zh_CN" if isinstance(translation(), gettext.GNUTranslations) else "en"


def _(message: str) -> str:
    """``message`` in the language in force now."""
    return translation().gettext(message) if message else message


def n_(singular: str, plural: str, count: int) -> str:
    """The form of a message for ``count`` in the language in force (Chinese has one form, English two)."""
    return translation().ngettext(singular, plural, count)


def localized(text: str, chinese: str) -> str:
    """An owner's text given in two languages (the catalog's): ``chinese`` where Chinese is in force and the owner
    gave it, else ``text``."""
    return chinese if chinese and language() == "zh_CN" else text


def N_(message: str) -> str:
    """Mark ``message`` for translation where it is defined; it is translated with _() where it is shown."""
    return message
