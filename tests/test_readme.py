"""The README's examples run: each `$ mi ...` line of a console block, in order, on a fresh store
with MI_SEED set, must print exactly what the README shows. MI_UPDATE_README=1 rewrites them."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from mi_cli.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def _run(argv: list[str], capsys) -> str:
    """What a person at a terminal sees: stdout, then stderr (warnings and errors)."""
    capsys.readouterr()
    main(argv)
    captured = capsys.readouterr()
    return captured.out + captured.err


def _render_block(block: str, capsys) -> str:
    lines = []
    for line in block.splitlines():
        if line.startswith("$ "):
            argv = shlex.split(line[2:])
            assert argv[0] == "mi"
            lines.append(line)
            lines.extend(_run(argv[1:], capsys).splitlines())
    return "\n".join(lines) + "\n"


def test_readme_console_examples_are_true(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    monkeypatch.setenv("MI_DB", str(tmp_path / "readme.db"))
    monkeypatch.setenv("MI_SEED", "readme")
    text = README.read_text()
    rendered = [_render_block(m.group(1), capsys) for m in BLOCK.finditer(text)]
    assert rendered, "the README has no console examples"
    if os.environ.get("MI_UPDATE_README"):
        blocks = iter(rendered)
        README.write_text(BLOCK.sub(lambda m: "```console\n" + next(blocks) + "```", text))
        return
    for block, expected in zip(BLOCK.findall(text), rendered):
        assert block == expected


def test_the_python_example_gets_a_token_from_a_real_server(tmp_path, monkeypatch, capsys):
    """Builds the README's store, starts `mi serve`, applies the README's `mi env` line, runs its code."""
    from tests.clients.conftest import CLIENT_VARS, start_server

    db = tmp_path / "readme.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MI_DB", str(db))
    monkeypatch.setenv("MI_SEED", "readme")
    text = README.read_text()
    for block in BLOCK.findall(text):
        _render_block(block, capsys)
    server = start_server(db)
    try:
        env_line = next(line for line in re.findall(r"```bash\n(.*?)```", text, re.S)[0].splitlines() if "$(mi env" in line)
        argv = shlex.split(re.search(r'\$\((mi env [^)]*)\)', env_line).group(1))[1:]
        capsys.readouterr()
        assert main([*argv, "-o", "json"]) == 0
        variables = json.loads(capsys.readouterr().out)
        for var in CLIENT_VARS:
            monkeypatch.delenv(var, raising=False)
        for k, v in variables.items():
            monkeypatch.setenv(k, v)
        code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
        exec(compile(code, "README.md", "exec"), {})
        assert capsys.readouterr().out == "ey True\n"
    finally:
        assert server.stop() == 0


def test_setup_commands_are_what_ci_runs():
    setup_section = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    setup = re.findall(r"```sh\n(.*?)\n```", setup_section, re.S)
    assert len(setup) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in setup:
        assert command in ci, command
