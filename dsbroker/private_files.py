"""Files only the account that runs dsbroker may read: state (stores, logs, ledgers, checkpoints) and keys.

Every such file is created with mode 0600, whatever the umask: ``os.open`` applies the umask to the
mode it is given (it can only take bits away), and ``fchmod`` then sets exactly 0600 on the new
file before anything is written to it. SQLite creates a database's ``-wal`` and ``-shm`` files with
the mode of the database file itself, so creating that file here first is enough for all three.
Files that exist already keep their mode: dsbroker never widens or narrows what an operator set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from dsbroker.errors import ConfigError

PRIVATE_MODE = 0o600


def create_private(path: str | Path) -> Path:
    """Create ``path`` empty with mode 0600 unless it exists (then leave it be); returns it as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(descriptor, PRIVATE_MODE)
    finally:
        os.close(descriptor)
    return path


def write_private(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), created with mode 0600 and never wider."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    os.fchmod(descriptor, PRIVATE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


def open_private(path: str | Path, mode: str = "a", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)``, the file created with mode 0600 first if it does not exist."""
    return open(create_private(path), mode, **kwargs)


@contextmanager
def built_privately(path: str | Path) -> Iterator[Path]:
    """Where to build ``path`` (a file another program writes, such as a DuckDB database, which will not
    open a file made empty beforehand): inside a directory beside it that only this account may enter
    (0700), so nobody reads it half-built; on success it is set to 0600 and renamed into place, replacing
    ``path``. Nothing is left behind on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))  # mode 0700
    try:
        staged = scratch / path.name
        yield staged
        os.chmod(staged, PRIVATE_MODE)
        os.replace(staged, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_private_key(path: str | Path) -> PrivateKeyTypes:
    """Read a PEM private key, with a clear error when it is missing or not a key."""
    try:
        return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{path}: cannot read a private key ({error.__class__.__name__})") from None


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only (mode 0600)."""
    write_secret(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))


def write_secret(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, created readable by its owner only (mode 0600, never a wider moment)."""
    write_private(path, data)
