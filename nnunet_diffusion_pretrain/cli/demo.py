"""``nnUNetv2_diffusion_demo``: the whole pipeline on the built-in phantom, with the real commands:
phantom, planning, unlabeled pool, diffusion pretraining with a sample grid, a one-labelled-volume
split, the three transfer trainers and stock nnU-Net on the same budget, and a Dice report.

Every step is a stock ``nnUNetv2_*`` command or one of ours, run as a subprocess and printed, so
the demo doubles as a walk-through. Its nnU-Net folders live under the output folder; nothing
outside it is touched. Re-running continues where it stopped (finished steps are skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

from nnunet_diffusion_pretrain.subprocess_steps import console_script, ext_trainer_folder, run_step
from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors

DATASET_ID, DATASET_NAME = 990, "DiffusionPhantom"
PRETRAINER = "nnUNetTrainerDiffusionPretrain"
SEGMENTATION_TRAINERS = ("nnUNetTrainerBudget", "nnUNetTrainerDiffusionFinetune",
                         "nnUNetTrainerDiffusionDecoderFinetune", "nnUNetTrainerDiffusionLinearProbe")


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_output"),
                        help="work folder (nnU-Net folders, unlabeled scans, results); default ./demo_output")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"), help="device for nnUNetv2_train")
    parser.add_argument("--epochs", type=int, default=25, help="pretraining epochs; default 25")
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch; default 50")
    parser.add_argument("--finetune-epochs", type=int, default=10,
                        help="epochs of 25 iterations for each segmentation trainer; default 10")
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
        timings["phantom"] = run_step("1. write the built-in CT phantom (12 labelled + 16 unlabeled volumes)", [
            console_script("nnUNetv2_diffusion_make_phantom"), "-d", str(DATASET_ID), "--name", DATASET_NAME,
            "-u", str(unlabeled), "--overwrite"], env)
    if not (Path(env["nnUNet_preprocessed"]) / dataset / "nnUNetPlans.json").is_file():
        timings["plan"] = run_step("2. plan and preprocess with stock nnU-Net", [
            console_script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "2",
            "--verify_dataset_integrity"], env)
    timings["pool"] = run_step("3. add the unlabeled scans to the pretraining pool", [
        console_script("nnUNetv2_diffusion_add_unlabeled"), "-d", str(DATASET_ID), "-c", "2d", "-i", str(unlabeled)], env)

    timings["splits"] = run_step("4. splits: 3 held-out volumes; folds with all 9 and with 1 labelled volume", [
        console_script("nnUNetv2_make_lowlabel_splits"), "-d", str(DATASET_ID), "--all-labeled", "--num-labeled", "1",
        "--repeats", "1", "--num-val", "3", "--seed", "0"], env)
    manifest = json.loads((Path(env["nnUNet_preprocessed"]) / dataset / "lowlabel_splits.json").read_text())
    all_fold = next(f["fold"] for f in manifest["folds"] if f["kind"] == "all")
    low_fold = next(f["fold"] for f in manifest["folds"] if f["kind"] == "cases" and f["budget"] == 1)

    train_env = dict(env, nnUNet_num_epochs=str(args.epochs), nnUNet_num_iterations_per_epoch=str(args.iterations),
                     nnUNet_num_val_iterations_per_epoch="5", nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0"))
    fold = Path(env["nnUNet_results"]) / dataset / f"{PRETRAINER}__nnUNetPlans__2d" / f"fold_{all_fold}"
    resume = ["--c"] if any((fold / f"checkpoint_{k}.pth").is_file() for k in ("final", "latest", "best")) else []
    timings["pretrain"] = run_step(f"5. diffusion pretraining ({args.epochs} x {args.iterations} iterations) on the "
                                f"images of fold {all_fold} (held-out volumes unseen) plus the unlabeled pool, "
                                f"and a DDIM sample grid", [
        console_script("nnUNetv2_train"), str(DATASET_ID), "2d", str(all_fold), "-tr", PRETRAINER,
        "-device", args.device, *resume], train_env)
    checkpoint = fold / "checkpoint_final.pth"

    seg_env = dict(train_env, nnUNet_num_epochs=str(args.finetune_epochs), nnUNet_num_iterations_per_epoch="25")
    results = {}
    for i, trainer in enumerate(SEGMENTATION_TRAINERS):
        out_fold = Path(env["nnUNet_results"]) / dataset / f"{trainer}__nnUNetPlans__2d" / f"fold_{low_fold}"
        weights = [] if trainer == "nnUNetTrainerBudget" else ["-pretrained_weights", str(checkpoint)]
        if not (out_fold / "validation" / "summary.json").is_file():
            resume_seg = ["--c"] if (out_fold / "checkpoint_latest.pth").is_file() else weights
            timings[trainer] = run_step(f"6.{i + 1}. train {trainer} on 1 labelled volume (fold {low_fold}) and "
                                     f"validate on the held-out volumes", [
                console_script("nnUNetv2_train"), str(DATASET_ID), "2d", str(low_fold), "-tr", trainer,
                "-device", args.device, *resume_seg], seg_env)
        results[trainer] = json.loads((out_fold / "validation" / "summary.json").read_text())

    report = _dice_report(results, manifest, args)
    (out / "dice_report.md").write_text(report)
    print("\n=== done")
    print(f"pretrained checkpoint (EMA weights): {checkpoint}")
    print(f"sample grid: {fold / 'samples' / 'samples.png'}   progress plot: {fold / 'progress.png'}")
    print(report)
    print(f"report: {out / 'dice_report.md'}")
    print("wall time per step [s]: " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
    return 0


def _dice_report(results: dict, manifest: dict, args) -> str:
    """Held-out Dice per organ for each method, from nnU-Net's own validation summaries."""
    labels = {"1": "liver", "2": "right kidney", "3": "left kidney", "4": "spleen"}
    stock = results["nnUNetTrainerBudget"]["foreground_mean"]["Dice"]
    lines = [f"# Demo: 1 labelled phantom volume, {len(manifest['held_out'])} held-out volumes",
             "",
             f"Every method: {args.finetune_epochs} epochs x 25 iterations; diffusion pretraining "
             f"{args.epochs} x {args.iterations} iterations on the images of the non-held-out volumes plus the "
             f"unlabeled scans (the held-out volumes are never seen). Dice from each run's nnU-Net validation on "
             f"the held-out volumes (one run each: a demonstration, not a benchmark).",
             "",
             "| method | mean Dice | vs stock | " + " | ".join(labels.values()) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    for trainer, summary in results.items():
        dice = summary["foreground_mean"]["Dice"]
        organs = " | ".join(f"{summary['mean'][k]['Dice']:.3f}" for k in labels)
        lines.append(f"| {trainer} | {dice:.3f} | {dice - stock:+.3f} | {organs} |")
    return "\n".join(lines) + "\n"
