"""Where a store and the files kept beside it are: light enough for the entry point of every command."""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import urlsplit

PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_url(where: str) -> bool:
    """Whether a --db / MI_DB value names a PostgreSQL server rather than a file."""
    scheme, sep, _ = where.partition("://")
    return bool(sep) and scheme.lower() in PG_SCHEMES


def default_path() -> str:
    from platformdirs import user_data_path

    return str(user_data_path("mi", appauthor=False) / "mi.db")


def without_password(url: str) -> str:
    """postgresql://USER@HOST:PORT/DATABASE?QUERY: the URL with any password taken out."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        netloc = f"{userinfo.split(':', 1)[0]}@{hostport}"
    query = f"?{parts.query}" if parts.query else ""
    return f"postgresql://{netloc}{parts.path}{query}"


def companion(where: str) -> str:
    """What the files kept beside a store are named after (NAME.serve.json, NAME.ca.pem, NAME.azurite/...):
    the store file's own path, or for a PostgreSQL store a name in the user data folder made from its URL
    (without the password), one per server and database on this machine."""
    if not is_url(where):
        return where
    from platformdirs import user_data_path

    shown = without_password(where)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", shown.split("://", 1)[1])[:80]
    folder = user_data_path("mi", appauthor=False) / "postgres"
    folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    return str(folder / f"{readable}-{hashlib.sha256(shown.encode()).hexdigest()[:12]}")


# AF_UNIX paths hold at most 107 bytes on Linux (sun_path is 108 with its NUL), 103 on macOS.
_SOCKET_PATH_MAX = 100


def command_socket(where: str) -> str:
    """The socket a running `mi serve` takes commands for the store `where` on: beside the store (or its
    companion name), private to the user; in a private folder under the temporary folder when that path is
    too long for a socket."""
    base = companion(where)
    if not is_url(where):
        base = os.path.abspath(base)
    path = f"{base}.sock"
    if len(os.fsencode(path)) <= _SOCKET_PATH_MAX:
        return path
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"mi-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, hashlib.sha256(os.fsencode(path)).hexdigest()[:24] + ".sock")
