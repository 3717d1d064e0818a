"""Locate console commands (ours and nnU-Net's) for running them as subprocesses."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def console_script(name: str) -> str:
    """The script next to the running interpreter (a venv's bin/), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"command {name} not found next to {sys.executable} or on PATH; "
                                f"is the package installed in this environment?")
    return found
