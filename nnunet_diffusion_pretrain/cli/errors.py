"""Turn user-facing errors into one ``ERROR:`` line and a non-zero exit, as a CLI should."""
from __future__ import annotations

import functools
import sys
from typing import Callable

from nnunet_diffusion_pretrain.errors import UserFacingError


def exits_cleanly_on_user_errors(main: Callable[[], int | None]) -> Callable[[], int]:
    @functools.wraps(main)
    def wrapper() -> int:
        try:
            return main() or 0
        except (UserFacingError, FileNotFoundError, FileExistsError) as e:
            print(f"ERROR: {e}", file=sys.stderr)
            sys.exit(1)
    return wrapper
