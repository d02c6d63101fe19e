"""The `mi` application: registers the nouns and turns every failure into one line on stderr."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from mi_cli import __version__
from mi_cli.cli.runtime import configure, state
from mi_cli.errors import MiError, bounded, inert

# Every command of `mi`: its module under mi_cli.cli, the Typer app or function there, and the line `mi --help`
# shows for it (the first paragraph of its own help: tests/test_startup.py holds them equal). A command line
# imports and builds only the module it names: building the whole tree cost more than Python's start-up.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("serve", "serve", "Serve tokens to unmodified SDK clients, for every resource in the store."),
    "env": ("env", "env", "Print the exports that make azure-identity, msal and az get this resource's tokens from mi "
            "serve."),
    "log": ("log", "show_log", "Show the activity log, oldest first: every change made to the store, and every token "
            "issued or refused (a sign-in log: filter with --operation token)."),
    "compare": ("compare", "compare", "Compare the two kinds of managed identity, each row with what this store holds."),
    "demo": ("demo", "demo", "Walk through system- vs user-assigned identities on a temporary store (your store is "
             "never touched)."),
    "tree": ("explore", "tree", "Tenant > subscriptions > groups > resources, with each resource's identities: the "
             "system one lives and dies with it; user-assigned ones are shared or not; deleted ones show as broken."),
    "graph": ("explore", "graph", "The identity graph: resources (sources) -> their identities -> roles -> target "
              "scopes."),
    "doctor": ("explore", "doctor", "What Azure leaves to people: dangling references, orphaned role assignments, idle "
               "identities, control-plane roles used for data, resources near their identity limit, federated "
               "credentials that no assertion can match; each with its fix."),
    "apply": ("declare", "apply", "Make the store hold what the file declares, in one transaction: all of it or, on any "
              "invalid entry, nothing (the error names the entry). Applying the same file again changes nothing."),
    "export": ("declare", "export", "Write the whole tenant in the file format that `mi apply` reads (not the activity "
               "log or keys; Key Vault secrets only with --include-secrets)."),
    "reset": ("declare", "reset", "Empty the store: every object, the tenant and its keys, and the activity log. It asks "
              "first: at a terminal, a question; without one, it refuses unless --yes is given (as az's deletes)."),
    "account": ("account", "app", "The simulated tenant and the default subscription."),
    "subscription": ("account", "subscription_app", "Subscriptions of the simulated tenant."),
    "group": ("group", "app", "Resource groups."),
    "resource": ("resource", "app", "Resources (VMs, web apps, vaults, ...) and the catalog of resource types."),
    "identity": ("identity", "app", "Managed identities: user-assigned ones and the system-assigned ones of resources."),
    "sp": ("sp", "app", "Service principals behind the managed identities. They are created and deleted only with their "
           "identity."),
    "token": ("token", "app", "Managed-identity tokens: get, decode, verify; the tenant's signing keys."),
    "role": ("role", "app", "Azure RBAC: role definitions and role assignments."),
    "access": ("access", "app", "Evaluate Azure RBAC: who may do what, where, and why."),
    "keyvault": ("keyvault", "app", "Key Vault: the secrets of the store's vaults."),
    "storage": ("storage", "app", "Storage: the store's storage accounts, as az storage."),
    "app": ("app", "app", "App registrations for your own APIs: create them with identifier URIs and app roles, give "
            "them client secrets, and grant their roles to managed identities (as az ad app)."),
    "federation": ("federation", "app", "Workload identity federation: simulated external issuers, served at their own "
                   "host names through mi serve's local cloud, and the assertions they mint."),
}

app = typer.Typer(
    name="mi",
    help="Simulate Azure managed identities locally: resources, system- and user-assigned identities, "
    "their service principals and lifecycle, with Azure's names, shapes and errors.",
    no_args_is_help=True,
    add_completion=False,  # mi's own --install-completion / --show-completion (cli/options.py): imported only when used
    # -h as well as --help, on every command (click passes it down); help as wide as the terminal
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 200},
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
        Optional[str], typer.Option("--db", envvar="MI_DB", help="The store: a file, or a PostgreSQL database as postgresql://USER@HOST:PORT/DATABASE (default: a file in the user data folder).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback for unexpected errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    configure(db=db, debug=debug)


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


class _Root(typer.core.TyperGroup):
    """The `mi` group: lists its commands from COMMANDS and builds one only when a command line reaches it."""

    def list_commands(self, ctx) -> list[str]:  # noqa: ANN001
        return list(COMMANDS)

    def get_command(self, ctx, cmd_name: str):  # noqa: ANN001, ANN201
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = _build(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx, formatter) -> None:  # noqa: ANN001
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])


def _build(name: str):  # noqa: ANN202 - a click command
    """The click command of one of COMMANDS, made as the whole tree would make it, then finished by
    `finish.finish` (placeholders, uncut help, completion of the store's names)."""
    import importlib

    from mi_cli.cli import finish

    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(f"mi_cli.cli.{module}"), attribute)
    if isinstance(target, typer.Typer):
        built = typer.main.get_group_from_info(typer.models.TyperInfo(target, name=name), pretty_exceptions_short=True,
                                               rich_markup_mode=None, suggest_commands=True)
    else:
        built = typer.main.get_command_from_info(typer.models.CommandInfo(name=name, callback=target),
                                                 pretty_exceptions_short=True, rich_markup_mode=None)
    finish.finish(built)
    return built


def command():
    """The click command of `mi`: only the root is built here; each command is built when a command line
    names it (about 3 ms for one, 70 ms for all). It holds no per-run state: click makes a new context
    for every run, and `main` resets `state` around each one."""
    global _command
    if _command is None:
        root = typer.main.get_command(app)
        root.__class__ = _Root  # the same group, its commands found on demand
        from mi_cli.cli import finish

        finish.finish(root)
        root.params.extend(finish.completion_options())
        _command = root
    return _command


def main(argv: list[str] | None = None) -> int:
    """Run `mi` with `argv`; return the exit code (0 ok, 1 error, 2 usage, 3 not found)."""
    args = expand_multi_values(list(sys.argv[1:] if argv is None else argv))
    if "--show-completion" in args or "--install-completion" in args:
        from mi_cli.cli.finish import take_shell

        args = take_shell(args)
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
        if "_MI_COMPLETE" in os.environ:
            from mi_cli.cli.finish import prepare_completion

            prepare_completion()
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
    code = main()
    # What is left of the command is left to the process's end: the cyclic collector's walks over every module's
    # objects as the interpreter shuts down (SQLAlchemy's, the models') took longer than most commands' own work,
    # and freed memory the process was giving back anyway. Standard streams are still flushed, atexit still runs.
    import gc

    gc.freeze()
    sys.exit(code)
