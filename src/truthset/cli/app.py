"""The root Typer application; command modules register themselves on it.

Each ``truthset.cli.<topic>`` module imports :data:`app` (or creates a sub-application and adds
it) and is imported once by :mod:`truthset.cli.main`. Commands stay thin: parse, call a service
or the quality engine, format the answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from truthset.domain.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TruthsetError,
)

app = typer.Typer(
    name="truthset",
    help="Auditable ground truth for medical AI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Standard output (results) and standard error (progress, messages).
console = Console()
err_console = Console(stderr=True)

#: Exit codes, one per kind of failure, documented in docs/cli.md.
EXIT_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_DENIED = 5
EXIT_FAILED = 1

P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn Truthset's errors into a one-line message on stderr and the matching exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INPUT) from None
        except NotFoundError as exc:
            err_console.print(f"[bold red]not found:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_NOT_FOUND) from None
        except ConflictError as exc:
            err_console.print(f"[bold red]conflict:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_CONFLICT) from None
        except PermissionDeniedError as exc:
            err_console.print(f"[bold red]denied:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_DENIED) from None
        except TruthsetError as exc:
            err_console.print(f"[bold red]failed:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper
