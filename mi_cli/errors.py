"""Domain errors: an Azure error code, a message, and the exit code the CLI gives them."""

from __future__ import annotations


class MiError(Exception):
    """An error a user can cause; rendered as `ERROR: (Code) message`."""

    exit_code = 1

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"({self.code}) {self.message}"


class ValidationError(MiError):
    """Bad input that Azure would refuse with 400 (InvalidParameter, BadRequest, ...)."""


class ConflictError(MiError):
    """The request conflicts with the current state (409 in Azure)."""


class NotFoundError(MiError):
    """Something named does not exist (404 in Azure; exit 3 as in az)."""

    exit_code = 3


class UsageError(MiError):
    """The command line itself is wrong (exit 2 as in az)."""

    exit_code = 2


class StoreError(MiError):
    """The store cannot be opened, read or written."""


def resource_not_found(type_name: str | None, name: str, group: str) -> NotFoundError:
    what = f"{type_name}/{name}" if type_name else name
    return NotFoundError(
        "ResourceNotFound",
        f"The Resource '{what}' under resource group '{group}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def group_not_found(name: str) -> NotFoundError:
    return NotFoundError("ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
