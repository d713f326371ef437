"""Client profiles (like kubectl contexts): where a broker is, the files to reach it, and how to get a token.

Stored in one TOML file, ``$DSBROKER_CONFIG`` or ``$XDG_CONFIG_HOME/dsbroker/profiles.toml``
(``~/.config/...``), mode 0600 because a profile may hold a static token::

    current = "xuanwu"
    [profiles.xuanwu]
    broker = "broker.example.gov.cn:443"
    ca = "/home/li/keys/platform-ca.pem"
    token_command = "idp-cli token --audience dsbroker"

A client setting is taken from, in order: its flag, its environment variable, the profile
(``--profile``, else ``$DSBROKER_PROFILE``, else ``current``), its default.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import tomli_w

from broker.cli.i18n import _
from dsbroker.errors import ConfigError, shown
from dsbroker.private_files import write_private

PROFILE_KEYS = ("broker", "ca", "cert", "key", "plaintext", "token", "token_command", "tz")
# A token command that has not answered in this long is stuck (an identity provider asking on a terminal).
TOKEN_COMMAND_SECONDS = 60


@dataclass(frozen=True)
class Profile:
    """One profile's settings; empty means not set (the environment's or the default applies)."""

    broker: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    plaintext: bool = False
    token: str = ""  # a static token; token_command is the better way (a fresh token for each command)
    token_command: str = ""
    tz: str = ""

    def fresh_token(self, name: str) -> str:
        """The profile's token: the output of its token command when it has one, else its static token."""
        if not self.token_command:
            return self.token
        return run_token_command(self.token_command, profile=name)


def config_path() -> Path:
    """Where the profiles live: $DSBROKER_CONFIG, else the XDG config directory's dsbroker/profiles.toml."""
    if os.environ.get("DSBROKER_CONFIG"):
        return Path(os.environ["DSBROKER_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "dsbroker" / "profiles.toml"


@dataclass
class Profiles:
    """Every profile in the config file, and which one is current."""

    profiles: dict[str, Profile]
    current: str = ""

    @classmethod
    def load(cls, path: Path | None = None) -> Profiles:
        """The profiles in ``path`` (default :func:`config_path`); none when the file does not exist."""
        path = path or config_path()
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls({})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the profiles ({error.__class__.__name__})") from None
        profiles = {}
        for name, values in (document.get("profiles") or {}).items():
            unknown = set(values) - set(PROFILE_KEYS) if isinstance(values, dict) else {"?"}
            if unknown:
                raise ConfigError(f"{path}: profile {shown(name)} has unknown key(s) {', '.join(sorted(unknown))} "
                                  f"(allowed: {', '.join(PROFILE_KEYS)})")
            profiles[name] = Profile(**values)
        return cls(profiles, str(document.get("current") or ""))

    def save(self, path: Path | None = None) -> Path:
        """Write the profiles to ``path`` (default :func:`config_path`), mode 0600."""
        path = path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        document: dict = {"current": self.current} if self.current else {}
        # Only what is set: an empty setting leaves the environment's or the default in force.
        document["profiles"] = {name: {k: v for k, v in asdict(p).items() if v}
                                for name, p in sorted(self.profiles.items())}
        write_private(path, tomli_w.dumps(document))
        return path

    def get(self, name: str) -> Profile:
        """The profile ``name``; ConfigError naming the known ones when there is none."""
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or _("none; add one with 'dsbroker profile add'")
            raise ConfigError(_("no profile {name} in {path} (profiles: {known})").format(
                name=shown(name), path=config_path(), known=known))
        return self.profiles[name]

    def chosen(self, name: str | None) -> tuple[str, Profile | None]:
        """The profile a command uses: ``name`` (from --profile or $DSBROKER_PROFILE), else the current one."""
        if name:
            return name, self.get(name)
        if self.current and self.current in self.profiles:
            return self.current, self.profiles[self.current]
        return "", None


def run_token_command(command: str, *, profile: str) -> str:
    """Run a profile's token command (no shell) and return what it printed, stripped; ConfigError if it fails.

    Its output is a secret: it never appears in an error, nor does its standard error (it may echo one)."""
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=TOKEN_COMMAND_SECONDS,
                              check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        raise ConfigError(_("profile {name}: the token command did not run ({error})").format(
            name=shown(profile), error=error.__class__.__name__)) from None
    token = done.stdout.strip()
    if done.returncode != 0 or not token:
        raise ConfigError(_("profile {name}: the token command exited {code}").format(
            name=shown(profile), code=done.returncode) + ("" if token else _(" and printed no token")))
    return token


def profile_field_names() -> tuple[str, ...]:
    """The settings a profile holds, in the order ``profile show`` prints them."""
    return tuple(f.name for f in fields(Profile))
