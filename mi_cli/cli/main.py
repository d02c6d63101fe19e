"""The `mi` application: registers the nouns and turns every failure into one line on stderr."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from mi_cli import __version__
from mi_cli.cli import access, account, app as app_cli, compare, declare, demo, env, explore, federation, group, identity, keyvault, log, resource, role, serve, sp, storage, token
from mi_cli.cli.runtime import configure, state
from mi_cli.errors import MiError, bounded, inert

app = typer.Typer(
    name="mi",
    help="Simulate Azure managed identities locally: resources, system- and user-assigned identities, "
    "their service principals and lifecycle, with Azure's names, shapes and errors.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help: rich-rendered help would double the cost of `mi --help`.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"mi {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    db: Annotated[
        Optional[str], typer.Option("--db", envvar="MI_DB", help="Store file (default: a file in the user data folder).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback for unexpected errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    configure(db=db, debug=debug)


app.add_typer(account.app, name="account")
app.add_typer(account.subscription_app, name="subscription")
app.add_typer(group.app, name="group")
app.add_typer(resource.app, name="resource")
app.add_typer(identity.app, name="identity")
app.add_typer(sp.app, name="sp")
app.add_typer(token.app, name="token")
app.add_typer(role.app, name="role")
app.add_typer(access.app, name="access")
app.add_typer(keyvault.app, name="keyvault")
app.add_typer(storage.app, name="storage")
app.add_typer(app_cli.app, name="app")
app.add_typer(federation.app, name="federation")
app.command("serve")(serve.serve)
app.command("env")(env.env)
app.command("log")(log.show_log)
app.command("compare")(compare.compare)
app.command("demo")(demo.demo)
app.command("tree")(explore.tree)
app.command("graph")(explore.graph)
app.command("doctor")(explore.doctor)
app.command("apply")(declare.apply)
app.command("export")(declare.export)
app.command("reset")(declare.reset)

# Options that take az's space-separated list form (`--identities a b`) as well as repetition.
MULTI_VALUE = {"--identities", "--tags", "--audiences", "--user-assigned", "--identifier-uris"}


def expand_multi_values(args: list[str]) -> list[str]:
    """Rewrite `--tags a=1 b=2` as `--tags a=1 --tags b=2`, which is what the parser understands."""
    out: list[str] = []
    current: str | None = None
    seen = 0
    for arg in args:
        if arg == "--":
            current = None
        elif arg.startswith("-") and arg != "-":
            current, seen = (arg, 0) if arg in MULTI_VALUE else (None, 0)
        elif current is not None:
            if seen:
                out.append(current)
            seen += 1
        out.append(arg)
    return out


def _usage_line(exc: Exception) -> str:
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(message.split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and getattr(ctx, "command_path", None):
        message += f" (see '{ctx.command_path} --help')"
    return message


_command = None
_FRESH_STATE = dict(state)  # as runtime.py defines it, before any run


def command():
    """The click command tree of `app`, built on first use: building it costs about 70 ms, and a
    process that runs many commands (the tests, `mi demo`) needs it once. It holds no per-run state:
    click makes a new context for every run, and `main` resets `state` around each one."""
    global _command
    if _command is None:
        _command = typer.main.get_command(app)
    return _command


def main(argv: list[str] | None = None) -> int:
    """Run `mi` with `argv`; return the exit code (0 ok, 1 error, 2 usage, 3 not found)."""
    args = expand_multi_values(list(sys.argv[1:] if argv is None else argv))
    outer = dict(state)  # `mi demo` runs commands inside a command: give it back its own state after each
    state.clear()
    state.update(_FRESH_STATE, debug="--debug" in args)
    try:
        return _run(args)
    finally:
        state.clear()
        state.update(outer)


def error_text(exc: MiError) -> str:
    """As az prints a service's error (azure-core's ODataV4Format): `ERROR: (Code) Message`, then
    `Code: ...` and `Message: ...`. mi's own errors (usage, files, the store) are one line."""
    if not exc.service:
        return f"ERROR: {exc}"
    return f"ERROR: {exc}\nCode: {inert(exc.code)}\nMessage: {exc.message}"


def _run(args: list[str]) -> int:
    try:
        result = command().main(args=args, prog_name="mi", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except MiError as exc:
        print(error_text(exc), file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("ERROR: (OperationCancelled) Aborted.", file=sys.stderr)
        return 1
    except typer.exceptions.TyperException as exc:  # the parser's usage errors
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message())
            return 0
        code = "InvalidArgumentValue" if type(exc).__name__ == "BadParameter" else "UsageError"
        print(f"ERROR: ({code}) {bounded(_usage_line(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", 2) or 2
    except KeyboardInterrupt:
        print("ERROR: (OperationCancelled) Interrupted; nothing was changed.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place an unexpected error becomes a line
        if state.get("debug"):
            import traceback

            traceback.print_exc()
        print(f"ERROR: (InternalError) {bounded(f'{type(exc).__name__}: {exc}')} (run with --debug for details)", file=sys.stderr)
        return 1


def run() -> None:
    sys.exit(main())
