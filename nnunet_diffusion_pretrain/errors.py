"""The one exception type our commands turn into a one-line ``ERROR:`` message and exit code 1,
and the two ways they do it (our entry points, and stock ones running our trainers)."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserFacingError(Exception):
    """A problem the user can fix (wrong dataset, missing plans, bad input); the message says how."""


def exits_cleanly_on_user_errors(main: Callable[[], int | None]) -> Callable[[], int]:
    @functools.wraps(main)
    def wrapper() -> int:
        try:
            return main() or 0
        except (UserFacingError, FileNotFoundError, FileExistsError) as e:
            print(f"ERROR: {e}", file=sys.stderr)
            sys.exit(1)
    return wrapper


def install_user_error_hook() -> None:
    """In processes we do not own the entry point of (stock ``nnUNetv2_train`` running our trainers),
    an uncaught ``UserFacingError`` prints one ``ERROR:`` line instead of a traceback; the exit
    code stays non-zero. Every other exception keeps Python's full traceback."""
    previous = sys.excepthook

    def hook(kind, error, traceback) -> None:
        if isinstance(error, UserFacingError):
            print(f"ERROR: {error}", file=sys.stderr)
        else:
            previous(kind, error, traceback)
    sys.excepthook = hook
