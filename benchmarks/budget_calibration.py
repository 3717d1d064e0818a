"""Choose the benchmark's training budget without touching the held-out cases.

In an existing benchmark work folder, trains stock nnU-Net (and optionally other trainers) on all
but one of the training volumes and validates on the remaining training volume (a calibration
fold appended to splits_final.json; the held-out cases are never used), for several iteration
budgets. The question it answers: how many iterations does stock nnU-Net need before it learns
every organ at this scale?

    python benchmarks/budget_calibration.py --work benchmarks/work/btcv6_cpu --iterations 400 1600

The same fold compares fine-tuning settings (trainer variants) at a label budget, e.g.

    python benchmarks/budget_calibration.py --work benchmarks/work/btcv6_cpu1600 --iterations 1600 --num-train 1 \
        --trainers nnUNetTrainerBudget nnUNetTrainerDiffusionFinetune nnUNetTrainerDiffusionFinetune_encoderLR1 \
        --pretrained PRETRAINING_CHECKPOINT

or ablations of the fine-tuning (``_noEMA``: raw pretraining weights; ``_noWarmup``: no decoder-only
warm-up), validated on more than one training volume and run more than once each:

    python benchmarks/budget_calibration.py --work benchmarks/work/btcv6_cpu_pretrain80 --iterations 1600 \
        --num-train 1 --num-val 2 --runs 2 --trainers nnUNetTrainerBudget nnUNetTrainerDiffusionFinetune \
        nnUNetTrainerDiffusionFinetune_noEMA nnUNetTrainerDiffusionFinetune_noWarmup --pretrained CHECKPOINT

and the linear probe's timesteps (``nnUNetTrainerDiffusionLinearProbe`` 50/150/250, ``_t5_25_50``,
``_t250_500_750``), the fine-tuning recipes (``_nnssl``, ``_sawtooth``) and the transfer timestep t*
(``--transfer-timesteps 0 50 250``: each diffusion trainer once per t*) the same way.

Writes benchmarks/results/budget_calibration/<work folder name>[_train<N>][_val<M>] (or --name)/results.json and
report.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_diffusion_pretrain.evaluation.budget_calibration import (add_calibration_fold, calibration_run, run_name,
                                                                     run_seconds)
from nnunet_diffusion_pretrain.evaluation.report import with_hand_notes
from nnunet_diffusion_pretrain.evaluation.work_folder import open_work_folder, training_budget_env
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import write_json_atomically

REPO = Path(__file__).resolve().parents[1]


def setting_key(result: dict) -> tuple:
    return result["trainer"], result.get("transfer_timestep"), result["configuration"], result["iterations"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a benchmark work folder")
    parser.add_argument("--configurations", nargs="+", default=["2d_cpu"],
                        help="configurations of the plans to compare (e.g. one inheriting from 2d_cpu with batch 4)")
    parser.add_argument("--plans", default="nnUNetPlansAxial")
    parser.add_argument("--iterations", type=int, nargs="+", default=[400, 1600])
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--trainers", nargs="+", default=["nnUNetTrainerBudget"])
    parser.add_argument("--pretrained", type=Path, default=None, help="checkpoint for diffusion trainers")
    parser.add_argument("--num-train", type=int, default=None,
                        help="labelled training volumes of the calibration fold; default all but the validation ones")
    parser.add_argument("--num-val", type=int, default=1, help="training volumes to validate on; default 1")
    parser.add_argument("--runs", type=int, default=1, help="runs of each (trainer, configuration, budget); default 1")
    parser.add_argument("--transfer-timesteps", type=int, nargs="+", default=None,
                        help="t* values (nnUNet_transfer_timestep) to compare for the diffusion trainers; default: "
                             "the trainers' own")
    parser.add_argument("--tag", default="",
                        help="appended to each run's kept folder and log (e.g. _it8000): runs from another --pretrained "
                             "checkpoint need their own tag, else the earlier runs are taken as done")
    parser.add_argument("--name", default=None,
                        help="folder under benchmarks/results/budget_calibration; default the work folder's name with "
                             "_train<N>_val<M> (two studies on one work folder need two names)")
    args = parser.parse_args()

    bench = open_work_folder(args.work)
    work, source, manifest = bench.folder, bench.preprocessed, bench.manifest
    env = bench.env(nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0")
    training = bench.all_fold["train"]
    if args.num_train is not None and args.num_train + args.num_val > len(training):
        raise SystemExit(f"--num-train {args.num_train} + --num-val {args.num_val} > {len(training)} training volumes")
    fold, calibration_train, calibration_val = add_calibration_fold(
        source, training[:-args.num_val][:args.num_train] + training[-args.num_val:], args.num_val)
    print(f"calibration fold {fold}: train {calibration_train}, validate on {calibration_val} (held-out cases "
          f"{manifest['held_out']} unused)")
    labels = json.loads((source / "dataset.json").read_text())["labels"]

    name = args.name or work.name + (f"_train{args.num_train}" if args.num_train is not None else "") + \
        (f"_val{args.num_val}" if args.num_val > 1 else "")
    out = REPO / "benchmarks" / "results" / "budget_calibration" / name
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for run, trainer, configuration, iterations in itertools.product(range(1, args.runs + 1), args.trainers,
                                                                     args.configurations, args.iterations):
        stock = trainer.startswith("nnUNetTrainerBudget")
        for t_star in ([None] if stock or args.transfer_timesteps is None else args.transfer_timesteps):
            tag = args.tag + ("" if t_star is None else f"_t{t_star}")
            budget_env = training_budget_env(env, iterations // args.iterations_per_epoch, args.iterations_per_epoch,
                                             val_iterations=2)
            if t_star is not None:
                budget_env["nnUNet_transfer_timestep"] = str(t_star)
            kept = calibration_run(
                work / "nnUNet_results" / source.name, trainer, args.plans, configuration, fold, iterations, budget_env,
                work / "logs" / f"calibration_fold{fold}_{trainer}_{configuration}_{run_name(iterations, run, tag)}.log",
                pretrained=None if stock else args.pretrained, repeat=run, tag=tag)
            results.append(_result(kept, trainer, t_star, configuration, iterations, run))
            print(results[-1])
    _write(out, args, bench, work, source, fold, calibration_train, calibration_val, labels, results)


def _result(kept: Path, trainer: str, t_star: int | None, configuration: str, iterations: int, run: int) -> dict:
    summary = json.loads((kept / "validation" / "summary.json").read_text())
    return {"trainer": trainer, "transfer_timestep": t_star, "configuration": configuration, "iterations": iterations,
            "run": run, "seconds": run_seconds(kept), "mean_dice": summary["foreground_mean"]["Dice"],
            "dice_per_label": {k: v["Dice"] for k, v in summary["mean"].items()}}


def _write(out: Path, args: argparse.Namespace, bench, work: Path, source: Path, fold: int, calibration_train: list,
           calibration_val: list, labels: dict, results: list[dict]) -> None:
    names = {str(v): k for k, v in labels.items()}
    plans = PlansManager(str(source / f"{args.plans}.json"))
    batches = "; ".join(f"{c}: batch {plans.get_configuration(c).batch_size}, patch "
                        f"{plans.get_configuration(c).patch_size}" for c in args.configurations)
    report = [f"# Budget calibration on {source.name} (validation on training volumes, held-out cases unused)", "",
              f"Date {datetime.now(timezone.utc).isoformat(timespec='seconds')}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs. Plans {args.plans}; train {calibration_train}, validate {calibration_val}; "
              f"{args.iterations_per_epoch} iterations per epoch; nnU-Net's Dice from its final validation. "
              f"Batch and patch of each configuration: {batches}.", "",
              "| trainer | t* | configuration | iterations | run | seconds | mean Dice | "
              + " | ".join(names[k] for k in sorted(names) if k != "0") + " |", "|---|---|---|---|---|---|---|"
              + "---|" * (len(names) - 1)]
    for r in results:
        t_star = "" if r["transfer_timestep"] is None else r["transfer_timestep"]
        report.append(f"| {r['trainer']} | {t_star} | {r['configuration']} | {r['iterations']} | {r['run']} | "
                      f"{r['seconds']:.0f} | {r['mean_dice']:.3f} | "
                      + " | ".join(f"{r['dice_per_label'].get(k, float('nan')):.3f}" for k in sorted(names) if k != "0")
                      + " |")
    if args.runs > 1:
        report += ["", "Mean Dice over the runs of each setting (mean +- std):", "",
                   "| trainer | t* | configuration | iterations | runs | mean Dice |", "|---|---|---|---|---|---|"]
        key = lambda r: tuple("" if v is None else v for v in setting_key(r))  # noqa: E731
        for setting, rows in itertools.groupby(sorted(results, key=key), key=key):
            dice = [r["mean_dice"] for r in rows]
            report.append(f"| {' | '.join(map(str, setting))} | {len(dice)} | {np.mean(dice):.3f} +- "
                          f"{np.std(dice, ddof=1):.3f} |")
    write_json_atomically(out / "results.json", {"work": str(work), "fold": fold, "train": calibration_train,
                                                 "val": calibration_val, "settings": vars(args) | {"work": str(work),
                                                 "pretrained": str(args.pretrained)}, "benchmark_preset":
                                                 bench.state["settings"]["preset"], "results": results})
    (out / "report.md").write_text(with_hand_notes("\n".join(report) + "\n", out))
    print(f"written: {out / 'report.md'}")


if __name__ == "__main__":
    main()
