"""Finishes each built command for people: placeholders that name what goes there, group help that is not
cut, and shell completion of the names the store knows. Light until a completion is asked for."""

from __future__ import annotations

import os
from typing import Any, Callable

import typer

# What goes where an option's value goes, by the option's long name; any other option is named after
# itself (--issuer-url ISSUER_URL), never by its type (`<str>`).
PLACEHOLDERS = {
    "--db": "PATH|URL", "--file": "PATH", "--query": "JMESPATH", "--tags": "KEY[=VALUE]", "--ids": "ID",
    "--resource-group": "GROUP", "--msi-res-id": "ID", "--client-id": "GUID", "--object-id": "GUID",
    "--principal-id": "GUID", "--assignee-object-id": "GUID", "--subscription": "SUBSCRIPTION",
    "--identities": "IDENTITY", "--audience": "URI", "--audiences": "URI", "--vault-name": "VAULT",
    "--account-name": "ACCOUNT", "--resource": "RESOURCE", "--assignee": "PRINCIPAL", "--since": "TIME",
}


def finish(command: Any) -> None:
    """Placeholders, uncut help and value completion for `command` and everything under it."""
    for param in command.params:
        _placeholder(param)
        completer = _completer(command, param)
        if completer is not None and getattr(param, "_custom_shell_complete", None) is None:
            param._custom_shell_complete = completer
    for sub in getattr(command, "commands", {}).values():
        if sub.short_help is None and sub.help:
            # the group's listing shows the first paragraph whole, wrapped to the terminal (click would cut it)
            sub.short_help = " ".join(sub.help.split("\n\n", 1)[0].split())
        finish(sub)


def _placeholder(param: Any) -> None:
    if param.metavar is not None or getattr(param, "is_flag", False) or getattr(param, "count", False):
        return
    type_name = getattr(param.type, "name", "")
    if type_name == "choice":
        return  # its choices are the placeholder
    if param.param_type_name == "argument":
        param.metavar = (param.name or "VALUE").upper()
        param.__class__ = _argument_class(type(param))
        return
    longs = [o for o in param.opts if o.startswith("--")]
    name = longs[0] if longs else (param.opts[0] if param.opts else f"--{param.name}")
    param.metavar = PLACEHOLDERS.get(name) or ("PATH" if type_name == "path" else name.lstrip("-").upper().replace("-", "_"))


_ARGUMENT_CLASSES: dict[type, type] = {}


def _argument_class(base: type) -> type:
    """Typer's argument as usage lines write it in man pages and az: TOKEN, [TOKEN], TOKEN... (not {token})."""
    if base not in _ARGUMENT_CLASSES:
        class Argument(base):  # type: ignore[misc, valid-type]
            def make_metavar(self, ctx: Any, *, usage: bool = False) -> str:  # noqa: ARG002
                var = self.metavar + ("..." if self.nargs != 1 else "")
                return var if self.required or not usage else f"[{var}]"

        _ARGUMENT_CLASSES[base] = Argument
    return _ARGUMENT_CLASSES[base]


# --- completion of values from the store -------------------------------------------------------------


def _completer(command: Any, param: Any) -> Callable | None:
    names = set(param.opts)
    if "--resource-group" in names:
        return _from_store(_groups)
    if "--type" in names:
        return _types
    if "--role" in names:
        return _from_store(_roles)
    if "--identities" in names:
        return _from_store(_identity_refs)
    if "--resource" in names:
        return _from_store(_resources)
    if "--vault-name" in names:
        return _from_store(_vaults)
    if "--subscription" in names:
        return _from_store(_subscriptions)
    if "--name" in names:
        # the noun is the group the command sits in: `mi identity show -n`, `mi group delete -n`
        return _named({"identity": _identities, "group": _groups, "resource": _resources})
    return None


def _named(by_noun: dict[str, Callable]) -> Callable:
    def complete(ctx: Any, param: Any, incomplete: str) -> list:
        noun = ctx.parent.info_name if ctx.parent is not None else ""
        if ctx.info_name == "create" or noun not in by_noun:
            return []  # a new name: nothing to offer
        return _from_store(by_noun[noun])(ctx, param, incomplete)

    return complete


def _from_store(names: Callable[[Any, Any], list[str]]) -> Callable:
    """A completer that reads names from the store the command line names (--db, else MI_DB, else the
    default), in one read transaction. A store that cannot be read offers nothing: completion never
    prints an error into the shell."""

    def complete(ctx: Any, param: Any, incomplete: str) -> list:
        try:
            from mi_cli.services import Ctx
            from mi_cli.store import open_store

            root = ctx.find_root()
            store = open_store(root.params.get("db") or os.environ.get("MI_DB"))
            try:
                with store.transaction(write=False) as session:
                    found = names(Ctx.from_env(session), ctx)
            finally:
                store.close()
        except Exception:  # noqa: BLE001 - a shell's TAB must never show a traceback
            return []
        folded = incomplete.casefold()
        return sorted({n for n in found if n.casefold().startswith(folded)}, key=str.casefold)

    return complete


def _group_of(ctx: Any) -> str | None:
    return ctx.params.get("resource_group") or ctx.params.get("group")


def _groups(c: Any, ctx: Any) -> list[str]:
    from mi_cli.services import groups

    return [g.name for g in groups.list_all(c)]


def _resources(c: Any, ctx: Any) -> list[str]:
    from mi_cli.services import groups, resources

    group = _group_of(ctx)
    return [r.name for r in resources.list_all(c, group=groups.get(c, group) if group else None)]


def _identities(c: Any, ctx: Any) -> list[str]:
    from sqlmodel import select

    from mi_cli.models import ResourceGroup, UserAssignedIdentity

    stmt = select(UserAssignedIdentity.name)
    group = _group_of(ctx)
    if group:
        stmt = stmt.join(ResourceGroup, ResourceGroup.pk == UserAssignedIdentity.group_pk).where(
            ResourceGroup.name_key == group.casefold())
    return list(c.session.exec(stmt).all())


def _identity_refs(c: Any, ctx: Any) -> list[str]:
    return ["[system]", *_identities(c, ctx)]


def _roles(c: Any, ctx: Any) -> list[str]:
    from mi_cli.services import roles

    return [r.role_name for r in roles.all_roles(c)]


def _vaults(c: Any, ctx: Any) -> list[str]:
    from sqlmodel import select

    from mi_cli.models import Resource

    return list(c.session.exec(select(Resource.name).where(Resource.type == "Microsoft.KeyVault/vaults")).all())


def _subscriptions(c: Any, ctx: Any) -> list[str]:
    from mi_cli.services import tenancy

    return [s.name for s in tenancy.list_subscriptions(c)]


def _types(ctx: Any, param: Any, incomplete: str) -> list[str]:
    from mi_cli.catalog import catalog

    cat = catalog()
    spelled = {alias for rt in cat.types for alias in rt.aliases} | {rt.type for rt in cat.types}
    folded = incomplete.casefold()
    return sorted(n for n in spelled if n.casefold().startswith(folded))


# --- installing completion ---------------------------------------------------------------------------

SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def completion_options() -> list:
    """`--install-completion` and `--show-completion` for the root, for the shell mi runs in (found as Typer
    finds it, else $SHELL). Typer's completion machinery is imported only when one of them is used."""
    from typer.core import TyperOption

    def option(name: str, install: bool, help_: str):  # noqa: ANN202
        return TyperOption(param_decls=[name], is_flag=True, default=False, expose_value=False, is_eager=True,
                           help=help_, callback=lambda ctx, p, v: _completion(ctx, v, install))

    return [option("--install-completion", True, "Install completion for the current shell, or the one named after "
                   "it (bash, zsh, fish, powershell): commands, options, and the names of groups, resources, "
                   "identities and roles."),
            option("--show-completion", False, "Print the completion script for the current shell, or the one named "
                   "after it, to copy it or customise the installation.")]


_named_shell: list[str] = []


def take_shell(args: list[str]) -> list[str]:
    """`--show-completion zsh`: the shell named after either completion option is taken out of the command line
    here (a flag cannot have an optional value in this parser) and used instead of the detected one."""
    _named_shell.clear()
    for i, arg in enumerate(args[:-1]):
        if arg in ("--install-completion", "--show-completion") and args[i + 1].lower() in SHELLS:
            _named_shell.append(args[i + 1].lower())
            return args[:i + 1] + args[i + 2:]
    return args


def _shell() -> str:
    from typer._completion_shared import _get_shell_name

    if _named_shell:
        return _named_shell[0]

    try:
        found = _get_shell_name()
    except Exception:  # noqa: BLE001 - a process tree that cannot be read: fall back to $SHELL
        found = None
    return (found or os.path.basename(os.environ.get("SHELL", ""))).lower()


def _completion(ctx: Any, value: bool, install: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script
    from typer._completion_shared import install as install_script

    from mi_cli.errors import UsageError

    completion_init()
    shell = _shell()
    if shell not in SHELLS:
        raise UsageError("InvalidArgumentValue", f"Completion is for bash, zsh, fish and PowerShell; the current shell "
                         f"is {('%r' % shell) if shell else 'unknown'}. Run this from one of them (SHELL=/bin/bash "
                         "also names one).")
    if install:
        installed_shell, path = install_script(shell=shell, prog_name="mi", complete_var=COMPLETE_VAR)
        print(f"{installed_shell} completion installed in {path}")
        print("Completion will take effect once you restart the terminal")
    else:
        print(get_completion_script(prog_name="mi", complete_var=COMPLETE_VAR, shell=shell))
    raise typer.Exit(0)


COMPLETE_VAR = "_MI_COMPLETE"


def prepare_completion() -> bool:
    """Whether this run answers a shell's TAB (the completion script sets _MI_COMPLETE): then Typer's shell
    classes are registered first."""
    if not os.environ.get(COMPLETE_VAR):
        return False
    from typer._completion_classes import completion_init

    completion_init()
    return True
