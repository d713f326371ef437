"""One way to page a List method (AIP-158), for every List method of the broker and the sandbox.

- **Page size.** 0 is the list's default, anything above its maximum is the maximum; a negative size is
  INVALID_ARGUMENT ``PAGE_SIZE_INVALID``.
- **Page token.** Opaque to callers, and one format for every list: the base64url (unpadded) of a short JSON
  object that names the list (``l``), digests the request's other fields (``q``: a token does not carry a
  list filtered one way on as a list filtered another) and holds where the page ended (``a``: the sort key
  of the last item listed, texts and non-negative integers). A token that does not decode to that, for
  this list and these fields, was never issued for it: INVALID_ARGUMENT ``PAGE_TOKEN_INVALID`` with a
  ``google.rpc.BadRequest`` naming ``page_token``, never echoing it.
- **Reading every page** of a list from another server (:func:`every_page`) stops at a token it has seen
  and after ``most_pages``: a broken or hostile server cannot keep a client paging forever
  (UNAVAILABLE ``PAGES_WITHOUT_END``).
- **A page.** The store is asked for :attr:`Page.limit` items after :attr:`Page.after` (one more than the
  page holds); :meth:`Page.cut` keeps the page and writes the next token from its last item, or none when
  nothing follows.

    POLICY_PAGES = Pages("policies", (str,), default_size=50, max_size=500)

    page = POLICY_PAGES.read(request.page_size, request.page_token)
    policies, token = page.cut(store.list(after=page.after, limit=page.limit), key=lambda p: (p.id,))
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dsbroker.errors import DsbrokerError, RequestFieldError
from dsbroker.rpc.request_fields import INT64_MAX

T = TypeVar("T")
MAX_PAGE_TOKEN_CHARS = 1024
MAX_TOKEN_TEXT = 256  # characters of a text inside a page token (an id, a time)
# A catalog of more datasets than 100 pages of 100 is no owner's: past it a server is looping.
MOST_CATALOG_PAGES = 100


@dataclass(frozen=True)
class Pages:
    """How one List method pages: the list's name, the types of its sort key, and its page sizes."""

    list: str  # names the list a token belongs to, e.g. "policies"
    key: tuple[type, ...]  # the types of the sort key a token holds: str or int, in order
    default_size: int
    max_size: int

    def read(self, page_size: int, page_token: str, *fields: object) -> Page:
        """The page a caller asks for; ``fields`` are the request's other fields (its filters), which a token
        is bound to. PAGE_SIZE_INVALID or PAGE_TOKEN_INVALID when they cannot be read."""
        if page_size < 0:
            raise RequestFieldError("page_size must not be negative", field="page_size", reason="PAGE_SIZE_INVALID")
        query = _digest(fields)
        return Page(self, min(page_size or self.default_size, self.max_size), self._position(page_token, query), query)

    def token(self, after: tuple, query: str) -> str:
        """The token of the page that follows the item whose sort key is ``after``."""
        text = json.dumps({"l": self.list, "q": query, "a": list(after)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    def _position(self, token: str, query: str) -> tuple | None:
        if not token:
            return None
        try:
            if len(token) > MAX_PAGE_TOKEN_CHARS:
                raise ValueError("too long")
            data = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
            fields = json.loads(data)
            if not (isinstance(fields, dict) and fields.keys() == {"l", "q", "a"} and fields["l"] == self.list
                    and fields["q"] == query and isinstance(fields["a"], list) and len(fields["a"]) == len(self.key)):
                raise ValueError("not a token of this list")
            for value, kind in zip(fields["a"], self.key, strict=True):
                if kind is int and not (type(value) is int and 0 <= value <= INT64_MAX):
                    raise ValueError("not a position")
                if kind is str and not (type(value) is str and len(value) <= MAX_TOKEN_TEXT):
                    raise ValueError("not a name")
                if kind is str:
                    value.encode("utf-8")  # a lone surrogate (JSON's "\ud800") raises: no store holds it
                    if "\x00" in value:
                        raise ValueError("not text a store holds")
            return tuple(fields["a"])
        except (ValueError, UnicodeError, binascii.Error, RecursionError):
            raise RequestFieldError("page_token is not one this server issued for this list (with these filters)",
                                    field="page_token", reason="PAGE_TOKEN_INVALID") from None


@dataclass(frozen=True)
class Page:
    """One page a caller asked for: its size, and the sort key of the last item before it (None: the first)."""

    pages: Pages
    size: int
    after: tuple | None
    query: str

    @property
    def limit(self) -> int:
        """How many items to ask the store for: one more than the page holds, to tell whether more follow."""
        return self.size + 1

    def cut(self, items: Iterable[T], key: Callable[[T], tuple]) -> tuple[list[T], str]:
        """The page of ``items`` (up to :attr:`limit` of them, in list order, after :attr:`after`) and the next
        page's token, empty when this is the last page."""
        listed: Sequence[T] = list(items)
        if len(listed) <= self.size:
            return list(listed), ""
        return list(listed[:self.size]), self.pages.token(key(listed[self.size - 1]), self.query)


def _digest(fields: tuple) -> str:
    """A short digest of a request's other fields, so that a token continues only the list it was issued for."""
    text = json.dumps([_plain(f) for f in fields], separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: object) -> object:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def every_page(fetch: Callable[[str], tuple[Sequence[T], str]], *, list_name: str, most_pages: int) -> list[T]:
    """Every item of a list another server pages: ``fetch(token)`` answers a page's items and the next token.

    Stops with UNAVAILABLE ``PAGES_WITHOUT_END`` when a token comes back that was seen before, or when the
    list runs past ``most_pages`` pages."""
    items: list[T] = []
    token, seen = "", set()
    for _ in range(most_pages):
        page, token = fetch(token)
        items += page
        if not token:
            return items
        if token in seen:
            break
        seen.add(token)
    raise DsbrokerError(f"the {list_name} list did not end within {most_pages} pages; it was not read",
                        reason="PAGES_WITHOUT_END", list=list_name)
