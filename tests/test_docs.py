"""The README stays true: every setting is documented, and the quick start is the two scripts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from broker.settings import BrokerSettings

from sandbox.settings import SandboxSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("settings", [BrokerSettings, SandboxSettings])
def test_every_setting_is_in_the_readme(settings):
    missing = [f.name for f in dataclasses.fields(settings) if f"| `{f.name}` |" not in README]
    assert not missing, f"document these settings in README.md: {missing}"
    assert all(f.metadata.get("help") for f in dataclasses.fields(settings))


def test_quick_start_is_the_two_scripts():
    assert "./scripts/demo" in README and "./scripts/test" in README


def test_what_the_readmes_flow_writes_is_ignored_by_git():
    # keys init writes private keys, and the broker its access log and key under state/: never to commit.
    ignored = (Path(__file__).resolve().parent.parent / ".gitignore").read_text(encoding="utf-8").splitlines()
    for written, entry in (("keys init --dir keys", "/keys/"), ("state/access-log.sqlite", "/state/"),
                           ("mkdir -p signed", "/signed/"), ("cat > sandbox.toml", "/sandbox.toml")):
        assert written in README and entry in ignored, entry
