"""Run pipeline steps as subprocesses (a stock ``nnUNetv2_*`` command or one of ours): find the
command, print it first so a long pipeline doubles as a walk-through, return its wall time; and
the folder through which stock nnU-Net finds our trainers (``nnUNet_extTrainer``)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nnunet_diffusion_pretrain.errors import UserFacingError


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


def ext_trainer_folder() -> str:
    """The folder of thin re-export modules (repository ``trainers/``, installed as a subpackage)."""
    import nnunet_diffusion_pretrain.ext_trainers as ext_trainers

    return os.path.dirname(os.path.abspath(ext_trainers.__file__))


def run_step(title: str, args: list[str], env: dict, log: Path | None = None) -> float:
    """Run ``args``; output goes to the terminal, or to ``log`` (appended) when given. A failure
    stops the pipeline with the step's name; re-running continues from there."""
    command = " ".join(shlex.quote(a) for a in [Path(args[0]).name, *args[1:]])
    print(f"\n=== {title}\n$ {command}" + (f"\n  (output: {log})" if log else ""), flush=True)
    start = time.time()
    if log is None:
        returncode = subprocess.run(args, env=env).returncode
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"$ {command}\n")
            f.flush()
            returncode = subprocess.run(args, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        where = f"; see {log}" if log else " above"
        raise UserFacingError(f"step '{title}' failed (exit code {returncode}){where}. Fix the problem and re-run "
                              f"the same command to continue")
    return time.time() - start
