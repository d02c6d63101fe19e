"""`--help` stays light (no SQLAlchemy, SQLModel, pydantic, jwt or server stack; only the module of the command
named), and help reads well: -h, whole descriptions, named placeholders, shell completion."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sqlalchemy", "sqlmodel", "pydantic", "jwt", "uvicorn", "starlette", "fastapi", "yaml", "jmespath")

PROBE = """
import json, sys
from mi_cli.cli.main import command, main

def paths(cmd, prefix=()):
    yield prefix
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(None):
            yield from paths(cmd.get_command(None, name), (*prefix, name))

found = list(paths(command()))
codes = [main([*p, "--help"]) for p in found]
sys.stdout.flush()
print("\\n@@" + json.dumps({"paths": len(found), "codes": codes, "modules": sorted(sys.modules)}))
"""


def _probe(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.rsplit("@@", 1)[1])


def test_no_help_imports_the_store_or_server_stack():
    result = _probe(PROBE)
    assert result["paths"] > 25 and result["codes"] == [0] * result["paths"]
    loaded = {m.split(".")[0] for m in result["modules"]}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_plain_mi_help_does_not_import_rich():
    result = _probe("import sys, json\nfrom mi_cli.cli.main import main\nmain(['--help'])\nprint('\\n@@' + json.dumps({'modules': sorted(sys.modules)}))")
    assert not {m for m in result["modules"] if m.split(".")[0] in ("rich", *HEAVY)}


def test_mi_help_imports_no_command_module():
    result = _probe("import sys, json\nfrom mi_cli.cli.main import main\nmain(['--help'])\n"
                    "print('\\n@@' + json.dumps({'modules': sorted(sys.modules)}))")
    loaded = set(result["modules"])
    assert not {m for m in loaded if m.startswith("mi_cli.cli.") and m not in ("mi_cli.cli.main", "mi_cli.cli.runtime",
                                                                           "mi_cli.cli.finish")}


def test_a_command_line_builds_only_the_command_it_names():
    result = _probe("import sys, json\nfrom mi_cli.cli.main import main\nmain(['identity', 'create', '--help'])\n"
                    "print('\\n@@' + json.dumps({'modules': sorted(sys.modules)}))")
    commands = {m for m in result["modules"] if m.startswith("mi_cli.cli.")}
    assert "mi_cli.cli.identity" in commands
    assert not commands & {"mi_cli.cli.role", "mi_cli.cli.keyvault", "mi_cli.cli.serve", "mi_cli.cli.declare"}


def test_the_root_listing_says_what_each_command_says_of_itself():
    from mi_cli.cli.main import COMMANDS, command

    root = command()
    assert root.list_commands(None) == list(COMMANDS)
    for name, (_, _, listed) in COMMANDS.items():
        built = root.get_command(None, name)
        assert built.name == name
        assert listed == " ".join((built.help or "").split("\n\n", 1)[0].split()), name


def _help_pages():
    from mi_cli.cli.main import command

    def walk(cmd, prefix):
        yield prefix
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(None):
                yield from walk(cmd.get_command(None, name), (*prefix, name))

    return list(walk(command(), ()))


def test_every_help_page_answers_h_with_named_placeholders_and_whole_descriptions(mi):
    from mi_cli.cli.main import command

    pages = _help_pages()
    assert len(pages) > 60
    for path in pages:
        long, short = mi(*path, "--help"), mi(*path, "-h")
        assert long.code == short.code == 0 and long.out == short.out and long.err == "", path
        assert "<str>" not in long.out and "<integer>" not in long.out and "{" not in long.out.split("\n")[0], path
        # a group lists each command with the whole first paragraph of its help, wrapped, never cut off
        cmd = command()
        for name in path:
            cmd = cmd.get_command(None, name)
        if hasattr(cmd, "list_commands"):
            listing = " ".join(long.out.split("Commands:\n", 1)[1].split())
            for name in cmd.list_commands(None):
                first = " ".join((cmd.get_command(None, name).help or "").split("\n\n", 1)[0].split())
                assert f"{name} {first}" in listing, (path, name)


def test_help_fits_the_terminal(mi, monkeypatch):
    for columns in ("80", "200"):
        monkeypatch.setenv("COLUMNS", columns)
        for path in (("identity",), ("identity", "create"), ()):
            out = mi(*path, "--help").out
            assert max(len(line) for line in out.splitlines()) <= int(columns), (columns, path)


def _complete(words: str, db, cword: int | None = None) -> list[str]:
    import os

    parts = words.split(" ")
    env = {**os.environ, "_MI_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(parts) - 1 if cword is None else cword), "MI_DB": str(db)}
    out = subprocess.run([sys.executable, "-m", "mi_cli"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return out.stdout.split()


def test_bash_completes_commands_options_and_the_names_the_store_knows(ok, db):
    ok("group", "create", "-n", "rg-one", "-l", "westeurope")
    ok("group", "create", "-n", "rg-two", "-l", "westeurope")
    ok("identity", "create", "-g", "rg-one", "-n", "web-id")
    ok("identity", "create", "-g", "rg-two", "-n", "batch-id")
    ok("resource", "create", "-g", "rg-one", "-n", "vm1", "--type", "vm")
    assert _complete("mi ide", db) == ["identity"]
    assert "--resource-group" in _complete("mi identity show --res", db)
    assert _complete("mi identity show -g rg", db) == ["rg-one", "rg-two"]
    assert _complete("mi identity show -g rg-one -n ", db) == ["web-id"]  # only the group's own
    assert _complete("mi identity assign -g rg-one --resource ", db) == ["vm1"]
    assert "virtualMachines" in " ".join(_complete("mi resource create --type Microsoft.Compute/v", db))
    assert "Key Vault Secrets User" in " ".join(_complete("mi role assignment create --role Key", db)) or \
        "Key" in _complete("mi role assignment create --role Key", db)
    assert _complete("mi identity create -g rg-one -n ", db) == []  # a new name: nothing to offer


def test_completion_of_a_store_that_cannot_be_read_offers_nothing_quietly(tmp_path):
    folder = tmp_path / "dir.db"
    folder.mkdir()
    assert _complete("mi identity show -g ", folder) == []


def test_completion_scripts_for_each_shell(tmp_path):
    import os

    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --command mi"),
                          ("pwsh", "Register-ArgumentCompleter")):
        out = subprocess.run([sys.executable, "-m", "mi_cli", "--show-completion", shell], capture_output=True, text=True)
        assert out.returncode == 0, (shell, out.stderr)
        assert marker in out.stdout and "_MI_COMPLETE" in out.stdout, (shell, out.stdout[:300])
    # without a name: the shell mi runs in
    out = subprocess.run(["bash", "-c", f"'{sys.executable}' -m mi_cli --show-completion"], capture_output=True, text=True)
    assert out.returncode == 0 and "complete -o" in out.stdout, out.stderr


def test_install_completion_writes_the_script_where_the_shell_reads_it(tmp_path):
    import os

    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "mi_cli", "--install-completion", "bash"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    script = tmp_path / ".bash_completions" / "mi.sh"
    assert "_MI_COMPLETE" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
