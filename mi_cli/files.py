"""Files mi writes outside the store, written whole or not at all (temporary file, fsync, rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mi_cli.errors import MiError


def write_atomic(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> Path:
    """Replace `path` with `data` so that a reader (or a crash, or a full disk) sees the old file or
    the new one, never a fragment. `mode` None keeps an existing file's mode (else the umask's)."""
    target = Path(path)
    if target.is_dir():
        raise MiError("FileNotWritable", f"Cannot write '{_shown(str(path))}': it is a directory.")
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise MiError("FileNotWritable", f"Cannot write '{_shown(str(path))}': {exc.strerror}.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is None:
            try:
                mode = target.stat().st_mode & 0o7777
            except FileNotFoundError:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
        os.chmod(temp, mode)
        os.replace(temp, target)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise MiError("FileNotWritable", f"Cannot write '{_shown(str(path))}': {exc.strerror}.") from None
    try:  # the rename itself is durable once the folder is synced
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return target


def _shown(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."
