"""The README's examples run: each `$ mi ...` line of a console block, in order, on a fresh store
with MI_SEED set, must print exactly what the README shows. MI_UPDATE_README=1 rewrites them.
A line may also set a shell variable from a command (`$ kv=$(mi ... -o tsv)`), and later lines use it
(`"$kv"`) or a command's output in place (`"$(mi ...)"`), as a shell would.
The README's PostgreSQL URL (PG_URL) names a new database on the tests' own server (tests/pg.py)."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Iterator

import pytest

from mi_cli.cli.main import main
from tests.clients.az import az_cli  # noqa: F401 - the fixture: the real az, installed on first use

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"```console\n(.*?)```", re.S)
# The server the README's shared-tenant example names: each argument spelled so runs on the tests' server instead.
PG_URL = "postgresql://ci@db.example.com:5432/mi"


def _run(argv: list[str]) -> str:
    """What a person at a terminal sees: stdout, then stderr (warnings and errors)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        main(argv)
    return out.getvalue() + err.getvalue()


# `$ NAME=$(mi ...)`; `$(mi ...)` inside a line; `$NAME` or `${NAME}`
ASSIGN = re.compile(r"(\w+)=\$\((mi [^()]*)\)")
SUBSTITUTE = re.compile(r"\$\((mi [^()]*)\)")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _argv(command: str, urls: dict[str, str]) -> list[str]:
    argv = [urls.get(arg, arg) for arg in shlex.split(command)]
    assert argv[0] == "mi", command
    return argv[1:]


def _captured(command: str, urls: dict[str, str]) -> str:
    """What `$(command)` gives a shell: stdout, its last newlines taken off. Its stdout is a pipe, so mi
    prints what a script gets (MI_OUTPUT, set for the console lines' terminal tables, does not apply)."""
    out = io.StringIO()
    output = os.environ.pop("MI_OUTPUT", None)
    try:
        with redirect_stdout(out):
            assert main(_argv(command, urls)) == 0, command
    finally:
        if output is not None:
            os.environ["MI_OUTPUT"] = output
    return out.getvalue().rstrip("\n")


def _expanded(text: str, variables: dict[str, str], urls: dict[str, str]) -> str:
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in variables, f"${name} is set by no earlier line of the README"
        return variables[name]

    text = VARIABLE.sub(value, text)
    return SUBSTITUTE.sub(lambda m: _captured(m.group(1), urls), text)


def _render_block(block: str, urls: dict[str, str], variables: dict[str, str]) -> str:
    lines = []
    for line in block.splitlines():
        if line.startswith("$ "):
            lines.append(line)
            assign = ASSIGN.fullmatch(line[2:])
            err = io.StringIO()  # what the commands in $(...) say on stderr, which the terminal shows first
            with redirect_stderr(err):
                if assign:
                    variables[assign.group(1)] = _captured(_expanded(assign.group(2), variables, urls), urls)
                else:
                    command = _expanded(line[2:], variables, urls)
            lines.extend(err.getvalue().splitlines())
            if not assign:
                lines.extend(_run(_argv(command, urls)).splitlines())
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def readme(tmp_path_factory, request):
    """Every console block of the README run once, in order, on a fresh store with MI_SEED set:
    (the README's text, each block as it renders now, the store they left)."""
    from tests.conftest import MI_VARS

    folder = tmp_path_factory.mktemp("readme")
    db = folder / "readme.db"
    text = README.read_text()
    urls: dict[str, str] = {}
    if PG_URL in text:  # a new, empty database on the tests' PostgreSQL server stands for the README's
        server = request.getfixturevalue("pg_server")
        urls[PG_URL] = server.database("readme")
        request.addfinalizer(lambda: server.drop(urls[PG_URL]))
    with pytest.MonkeyPatch.context() as mp:
        for var in MI_VARS:
            mp.delenv(var, raising=False)
        mp.chdir(folder)  # examples that write files write them here
        mp.setenv("HOME", str(folder / "home"))
        mp.setenv("XDG_DATA_HOME", str(folder / "home" / "data"))
        mp.setenv("COLUMNS", "200")
        mp.setenv("MI_DB", str(db))
        mp.setenv("MI_SEED", "readme")
        # the examples' stdout is captured, where mi (as az) defaults to JSON: show the table a person at
        # a terminal gets by default
        mp.setenv("MI_OUTPUT", "table")
        variables: dict[str, str] = {}  # the shell's, from one block to the next
        rendered = [_render_block(m.group(1), urls, variables) for m in BLOCK.finditer(text)]
    assert not Path(f"{db}-wal").exists()  # every command closed the store: the file is all of it
    return text, rendered, db


def test_readme_console_examples_are_true(readme):
    text, rendered, _ = readme
    assert rendered, "the README has no console examples"
    if os.environ.get("MI_UPDATE_README"):
        blocks = iter(rendered)
        README.write_text(BLOCK.sub(lambda m: "```console\n" + next(blocks) + "```", text))
        return
    assert BLOCK.findall(text) == rendered


@contextmanager
def _as_the_readme_says(readme, section: str, tmp_path, monkeypatch, capsys) -> Iterator[Any]:
    """`mi serve` on a copy of the README's store, the environment of the section's `mi env` line applied;
    yields the section's first Python block, compiled (None when it has none)."""
    from tests.clients.conftest import CLIENT_VARS, start_server

    _, _, built = readme
    db = tmp_path / "readme.db"
    shutil.copy(built, db)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MI_DB", str(db))
    monkeypatch.setenv("MI_SEED", "readme")
    server = start_server(db)
    try:
        env_line = next(line for line in re.findall(r"```bash\n(.*?)```", section, re.S)[0].splitlines() if "$(mi env" in line)
        argv = shlex.split(re.search(r'\$\((mi env [^)]*)\)', env_line).group(1))[1:]
        capsys.readouterr()
        assert main([*argv, "-o", "json"]) == 0
        variables = json.loads(capsys.readouterr().out)
        for var in CLIENT_VARS:
            monkeypatch.delenv(var, raising=False)
        for k, v in variables.items():
            monkeypatch.setenv(k, v)
        python = re.findall(r"```python\n(.*?)```", section, re.S)
        yield compile(python[0], "README.md", "exec") if python else None
    finally:
        assert server.stop() == 0


def test_the_python_example_gets_a_token_from_a_real_server(readme, tmp_path, monkeypatch, capsys):
    """Starts `mi serve` on the README's store, applies the README's `mi env` line, runs its code."""
    with _as_the_readme_says(readme, readme[0], tmp_path, monkeypatch, capsys) as code:
        exec(code, {})
        assert capsys.readouterr().out == "ey True\n"


def test_the_key_vault_example_reads_the_secret_and_a_removed_role_denies_it(readme, tmp_path, monkeypatch, capsys):
    """The README's Key Vault section, run as written: `mi serve`, its `mi env` line, its Python code; then
    the role goes and the same code gets Key Vault's 403."""
    from azure.core.exceptions import HttpResponseError

    section = readme[0].split("## The local cloud: Key Vault, for real", 1)[1].split("\n## ", 1)[0]
    with _as_the_readme_says(readme, section, tmp_path, monkeypatch, capsys) as code:
        exec(code, {})
        assert capsys.readouterr().out == "s3cret\n"
        assert main(["resource", "show", "-g", "rg-demo", "-n", "kv-demo-01", "--query", "id", "-o", "tsv"]) == 0
        scope = capsys.readouterr().out.strip()
        assert main(["role", "assignment", "delete", "--assignee", "app-api", "--role", "Key Vault Secrets User",
                     "--scope", scope, "--yes"]) == 0
        with pytest.raises(HttpResponseError) as denied:
            exec(code, {})
        assert denied.value.status_code == 403 and "ForbiddenByRbac" in str(denied.value)


def test_setup_commands_are_what_ci_runs():
    setup_section = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    setup = re.findall(r"```sh\n(.*?)\n```", setup_section, re.S)
    assert len(setup) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in setup:
        assert command in ci, command


def test_the_blob_example_writes_and_reads_and_another_container_is_refused(readme, tmp_path, monkeypatch, capsys):
    """The README's Blob section, run as written against `mi serve` and Azurite; then the same code on a
    container the role does not cover gets Storage's 403."""
    from azure.core.exceptions import HttpResponseError

    section = readme[0].split("## The local cloud: Blob Storage, for real", 1)[1].split("\n## ", 1)[0]
    with _as_the_readme_says(readme, section, tmp_path, monkeypatch, capsys) as code:
        exec(code, {})
        assert capsys.readouterr().out == "all good\n"
        source = re.findall(r"```python\n(.*?)```", section, re.S)[0].replace('"reports"', '"archive"')
        with pytest.raises(HttpResponseError) as denied:
            exec(compile(source, "README.md", "exec"), {})
        assert denied.value.status_code == 403 and denied.value.error_code == "AuthorizationPermissionMismatch"


def test_the_app_registration_example_puts_its_role_in_the_token(readme, capsys):
    """The README's app registration block left vm-ops holding Orders.Read on api://orders: its token says so."""
    import jwt

    _, _, built = readme
    capsys.readouterr()
    assert main(["--db", str(built), "token", "get", "--resource", "vm-ops", "-g", "rg-demo", "--audience", "api://orders",
                 "-o", "json"]) == 0
    token = json.loads(capsys.readouterr().out)["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["roles"] == ["Orders.Read"]


def test_the_az_example_runs_as_written(readme, tmp_path, monkeypatch, capsys, az_cli):
    """The README's az block, line by line as a shell runs it, against `mi serve` on the README's store: the real
    az signs in as vm-ops, makes a group and an identity mi then shows, and is refused the role assignment."""
    import subprocess

    section = readme[0].split("## The local cloud: ARM, Entra and Graph", 1)[1].split("\n## ", 1)[0]
    script = re.findall(r"```bash\n(.*?)```", section, re.S)[0]
    lines = [line for line in script.splitlines() if not line.startswith("mi serve")]
    with _as_the_readme_says(readme, section, tmp_path, monkeypatch, capsys):
        bin_dir = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
        shell_env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))
                     and k.upper() not in ("HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
        shell_env["PATH"] = os.pathsep.join([str(Path(az_cli).parent), str(bin_dir), shell_env.get("PATH", "")])
        done = subprocess.run(["bash", "-c", "\n".join(lines)], env=shell_env, capture_output=True, text=True,
                              timeout=600)
    assert done.stdout.splitlines() == ["Succeeded", "id-from-az", "id-from-az"], done.stderr[-3000:]
    assert "(AuthorizationFailed)" in done.stderr and "Microsoft.Authorization/roleAssignments/write" in done.stderr


def test_the_federation_example_exchanges_the_assertion(readme, tmp_path, monkeypatch, capsys):
    """The README's workload identity section as written: `mi env --workload-identity` in the environment, and
    DefaultAzureCredential gets id-deploy's token by exchanging the GitHub-shaped assertion."""
    section = readme[0].split("## Workload identity federation", 1)[1].split("\n## ", 1)[0]
    with _as_the_readme_says(readme, section, tmp_path, monkeypatch, capsys) as code:
        assert os.environ.get("AZURE_FEDERATED_TOKEN_FILE") and not os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        exec(code, {})
        assert capsys.readouterr().out == "id-deploy\n"
