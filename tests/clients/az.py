"""The real az CLI for the tests: found, or installed once into a cached virtual environment of its own.

az is found as `MI_AZ` names it (an az executable), else in the cache, ~/.cache/mi-azure-cli/bin/az. When the
cache holds none, it is installed there from PyPI (`python -m venv` and `pip install azure-cli`: about five
minutes and 730 MB), under a file lock so that parallel test processes install it once. A cached venv is
checked by running `az version` before it is trusted, so an install cut short is made again, not used.
`MI_AZ_CACHE` names another cache folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The releases mi is tested with: 2.80 onward speak the protocol the local cloud serves (observed with 2.91).
REQUIREMENT = "azure-cli>=2.80,<3"
# Read at import, before any test points HOME at its own folder: the cache is the user's.
CACHE = Path(os.environ.get("MI_AZ_CACHE") or Path.home() / ".cache" / "mi-azure-cli")
INSTALL_TIMEOUT = 30 * 60  # seconds; a slow mirror, a loaded machine


class AzUnavailable(RuntimeError):
    """az could not be found or installed; the message says why and what was tried."""


def _say(text: str) -> None:
    # the real stderr: an install takes minutes, and pytest captures what a fixture prints
    print(f"[az] {text}", file=sys.__stderr__, flush=True)


def _version(az: Path) -> str | None:
    """azure-cli's version as `az version` reports it, or None when that executable does not run."""
    try:
        done = subprocess.run([str(az), "version", "-o", "json"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "AZURE_CORE_COLLECT_TELEMETRY": "false",
                                   "AZURE_CONFIG_DIR": str(CACHE / "config")})
        return json.loads(done.stdout)["azure-cli"] if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None


def _install(venv: Path) -> None:
    log = venv.with_name(venv.name + ".install.log")
    started = time.monotonic()
    commands = [[sys.executable, "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", REQUIREMENT]]
    _say(f"installing the az CLI into {venv} (about 5 minutes, 730 MB); pip's output goes to {log}")
    with open(log, "w") as out:
        for command in commands:
            _say("$ " + " ".join(command))
            try:
                code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise AzUnavailable(f"{' '.join(command)} failed: {exc}") from exc
            if code != 0:
                out.flush()
                tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
                raise AzUnavailable(f"{' '.join(command)} exited {code}; the end of {log}:\n{tail}")
    _say(f"installed in {time.monotonic() - started:.0f} s")


def find_or_install() -> tuple[Path, str]:
    """(the az executable, azure-cli's version), installing az into the cache when it is not there."""
    named = os.environ.get("MI_AZ")
    if named:
        az = Path(shutil.which(named) or named)
        version = _version(az)
        if version is None:
            raise AzUnavailable(f"MI_AZ names {named}, which does not run `az version`.")
        return az, version
    az = CACHE / "bin" / "az"
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(CACHE.with_name(CACHE.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process installing: wait for it, then use what it made
        if az.exists():
            version = _version(az)
            if version is not None:
                return az, version
            _say(f"{az} exists but does not run: installing again")
        shutil.rmtree(CACHE, ignore_errors=True)
        _install(CACHE)
        version = _version(az)
        if version is None:
            raise AzUnavailable(f"az was installed into {CACHE} but `{az} version` does not run.")
        return az, version


@pytest.fixture(scope="session")
def az_cli() -> Path:
    """The path of an az executable (installed on first use). A failed install fails the test, with its reason."""
    try:
        az, version = find_or_install()
    except AzUnavailable as exc:
        reason = str(exc)
    else:
        reason = None
    if reason is not None:
        pytest.fail(f"the az CLI is needed and could not be had: {reason}", pytrace=False)
    _say(f"using {az} (azure-cli {version})")
    return az
