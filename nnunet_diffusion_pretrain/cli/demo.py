"""``nnUNetv2_diffusion_demo``: the whole pipeline on the built-in phantom, with the real commands.

Every step is a stock ``nnUNetv2_*`` command or one of ours, run as a subprocess and printed, so
the demo doubles as a walk-through. Its nnU-Net folders live under the output folder; nothing
outside it is touched. Re-running continues where it stopped (finished steps are skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

from nnunet_diffusion_pretrain.cli.console_scripts import console_script
from nnunet_diffusion_pretrain.cli.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.cli.setup_env import ext_trainer_folder
from nnunet_diffusion_pretrain.errors import UserFacingError

DATASET_ID, DATASET_NAME = 990, "DiffusionPhantom"
PRETRAINER = "nnUNetTrainerDiffusionPretrain"


def _step(title: str, args: list[str], env: dict) -> float:
    print(f"\n=== {title}\n$ {' '.join(shlex.quote(a) for a in [Path(args[0]).name, *args[1:]])}", flush=True)
    start = time.time()
    if subprocess.run(args, env=env).returncode != 0:
        raise UserFacingError(f"step '{title}' failed; fix the problem above and re-run the demo to continue")
    return time.time() - start


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_output"),
                        help="work folder (nnU-Net folders, unlabeled scans, results); default ./demo_output")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"), help="device for nnUNetv2_train")
    parser.add_argument("--epochs", type=int, default=30, help="pretraining epochs; default 30")
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch; default 50")
    args = parser.parse_args()

    out = args.output.resolve()
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(out / "nnUNet_raw"), "nnUNet_preprocessed": str(out / "nnUNet_preprocessed"),
        "nnUNet_results": str(out / "nnUNet_results"), "nnUNet_extTrainer": ext_trainer_folder(),
        "nnUNet_def_n_proc": env.get("nnUNet_def_n_proc", "2"),
    })
    env.pop("nnUNet_diffusion_pool", None)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    print("nnU-Net folders for this demo (export these to inspect it with nnU-Net's commands):")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        print(f"  export {key}={shlex.quote(env[key])}")

    dataset = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    unlabeled = out / "unlabeled_ct"
    timings = {}
    if not (Path(env["nnUNet_raw"]) / dataset / "dataset.json").is_file():
        timings["phantom"] = _step("1. write the built-in CT phantom (12 labelled + 16 unlabeled volumes)", [
            console_script("nnUNetv2_diffusion_make_phantom"), "-d", str(DATASET_ID), "--name", DATASET_NAME,
            "-u", str(unlabeled), "--overwrite"], env)
    if not (Path(env["nnUNet_preprocessed"]) / dataset / "nnUNetPlans.json").is_file():
        timings["plan"] = _step("2. plan and preprocess with stock nnU-Net", [
            console_script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "2",
            "--verify_dataset_integrity"], env)
    timings["pool"] = _step("3. add the unlabeled scans to the pretraining pool", [
        console_script("nnUNetv2_diffusion_add_unlabeled"), "-d", str(DATASET_ID), "-c", "2d", "-i", str(unlabeled)], env)

    train_env = dict(env, nnUNet_num_epochs=str(args.epochs), nnUNet_num_iterations_per_epoch=str(args.iterations),
                     nnUNet_num_val_iterations_per_epoch="5", nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0"))
    fold = Path(env["nnUNet_results"]) / dataset / f"{PRETRAINER}__nnUNetPlans__2d" / "fold_all"
    resume = ["--c"] if any((fold / f"checkpoint_{k}.pth").is_file() for k in ("final", "latest", "best")) else []
    timings["pretrain"] = _step(f"4. diffusion pretraining ({args.epochs} x {args.iterations} iterations) "
                                f"and a DDIM sample grid", [
        console_script("nnUNetv2_train"), str(DATASET_ID), "2d", "all", "-tr", PRETRAINER, "-device", args.device,
        *resume], train_env)

    print("\n=== done")
    print(f"pretrained checkpoint (EMA weights): {fold / 'checkpoint_final.pth'}")
    print(f"sample grid: {fold / 'samples' / 'samples.png'}   progress plot: {fold / 'progress.png'}")
    print("wall time per step [s]: " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
    return 0
