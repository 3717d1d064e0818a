"""Run one pipeline step as a subprocess (a stock ``nnUNetv2_*`` command or one of ours), printed
first so a long pipeline doubles as a walk-through, with its wall time returned."""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from nnunet_diffusion_pretrain.errors import UserFacingError


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
