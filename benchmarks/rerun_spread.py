"""Run-to-run spread: how much one benchmark run moves when it is simply run again.

Re-trains chosen runs of a finished benchmark (same trainer, fold, labelled cases, settings and
budget; for transfer trainers the same pretraining checkpoint) N more times, each into its own
nnU-Net results folder under the work folder (the benchmark's runs are never touched), scores each
on the held-out cases exactly as the benchmark does (MONAI Dice per organ, mean over organs and
cases) and reports them next to the benchmark's own score. The question it answers: is a
difference between methods larger than what re-running the same thing changes?

    python benchmarks/rerun_spread.py --work benchmarks/work/btcv6_cpu_pretrain80 \
        --report benchmarks/results/btcv6_cpu_pretrain80 --runs nnUNetTrainerBudget__slices4__r1 --reruns 2

Writes benchmarks/results/rerun_spread/<work folder name>/{results.json,report.md}; resumable
(finished re-runs are kept); report.md ends with the folder's hand-written notes.md, if any.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nnunet_diffusion_pretrain.evaluation.axial_plans import AXIAL_PLANS
from nnunet_diffusion_pretrain.evaluation.report import segmentation_epochs, with_hand_notes
from nnunet_diffusion_pretrain.evaluation.run_catalogue import TrainingRun, start_arguments
from nnunet_diffusion_pretrain.evaluation.segmentation_metrics import organ_metrics
from nnunet_diffusion_pretrain.evaluation.work_folder import open_work_folder, training_budget_env
from nnunet_diffusion_pretrain.subprocess_steps import console_script, run_step
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import write_json_atomically

REPO = Path(__file__).resolve().parents[1]


def run_score(cases: dict) -> float:
    """The benchmark's run score: mean over held-out cases of the mean Dice over organs."""
    return float(np.mean([np.mean([organ["dice"] for organ in organs.values()]) for organs in cases.values()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a benchmark work folder")
    parser.add_argument("--report", type=Path, required=True, help="that benchmark's report folder (results.json)")
    parser.add_argument("--runs", nargs="+", required=True, help="run ids as in results.json, e.g. "
                        "nnUNetTrainerBudget__slices4__r1")
    parser.add_argument("--reruns", type=int, default=2, help="re-runs per run; default 2")
    parser.add_argument("--nsd-tolerance", type=float, default=2.0, help="mm, as the benchmark's default")
    args = parser.parse_args()

    bench = open_work_folder(args.work)
    benchmark = json.loads((args.report / "results.json").read_text())
    recorded = {r["run_id"]: r for r in benchmark["runs"]}
    missing = [r for r in args.runs if r not in recorded]
    if missing:
        raise SystemExit(f"not in {args.report / 'results.json'}: {', '.join(missing)}")
    preset = bench.state["settings"]["preset"]
    raw = bench.folder / "nnUNet_raw" / bench.dataset
    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending, labels = dataset_json["file_ending"], dataset_json["labels"]
    scratch = bench.folder / "rerun_spread"
    out = REPO / "benchmarks" / "results" / "rerun_spread" / bench.folder.name
    out.mkdir(parents=True, exist_ok=True)

    budget_env = training_budget_env(bench.env(nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0"),
                                     segmentation_epochs(bench.state), preset["finetune_iterations"],
                                     preset["val_iterations"])
    rows = []
    for run_id in args.runs:
        entry = recorded[run_id]
        run = TrainingRun(entry["method"], entry["kind"], entry["budget"], entry["repeat"], entry["dataset"],
                          entry["fold"], tuple(entry["train"]))
        scores = []
        for k in range(1, args.reruns + 1):
            results_root = scratch / f"rerun{k}"
            env = dict(budget_env, nnUNet_results=str(results_root))  # never the benchmark's own runs
            fold = run.fold_folder(results_root, AXIAL_PLANS, preset["configuration"])
            if not (fold / "validation" / "summary.json").is_file():
                start = start_arguments(fold, bench.pretraining_checkpoint() if run.needs_pretrained_weights else None)
                run_step(f"re-run {k}/{args.reruns} of {run_id}", [
                    console_script("nnUNetv2_train"), run.dataset[7:10], preset["configuration"], str(run.fold),
                    "-tr", run.trainer, "-p", AXIAL_PLANS, "-device", "cpu", *start], env,
                    scratch / "logs" / f"{run_id}_rerun{k}.log")
            cases = {case: organ_metrics(str(fold / "validation" / f"{case}{ending}"),
                                         str(raw / "labelsTr" / f"{case}{ending}"), labels, args.nsd_tolerance)
                     for case in bench.held_out}
            scores.append(run_score(cases))
            print(f"{run_id} re-run {k}: mean Dice {scores[-1]:.3f}")
        rows.append({"run_id": run_id, "train": entry["train"], "benchmark_dice": run_score(entry["cases"]),
                     "rerun_dice": scores})

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"# Run-to-run spread in {bench.folder.name}", "",
             f"Date {now}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs. Each re-run repeats "
             f"the benchmark's run with identical trainer, fold, labelled cases and settings "
             f"({segmentation_epochs(bench.state)} x {preset['finetune_iterations']} iterations); score = mean Dice "
             f"over organs and the held-out cases {', '.join(bench.held_out)}, as in `{args.report}/report.md`.", "",
             "| run | labelled | benchmark's run | re-runs | all runs: mean +- std | max - min |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        every = [r["benchmark_dice"], *r["rerun_dice"]]
        lines.append(f"| {r['run_id']} | {', '.join(r['train'])} | {r['benchmark_dice']:.3f} | "
                     f"{' / '.join(f'{s:.3f}' for s in r['rerun_dice'])} | {np.mean(every):.3f} +- "
                     f"{np.std(every, ddof=1):.3f} | {max(every) - min(every):.3f} |")
    write_json_atomically(out / "results.json", {"date": now, "work": str(bench.folder), "report": str(args.report),
                                                 "settings": vars(args) | {"work": str(args.work),
                                                                           "report": str(args.report)},
                                                 "preset": preset, "runs": rows})
    (out / "report.md").write_text(with_hand_notes("\n".join(lines) + "\n", out))
    print(f"written: {out / 'report.md'}")


if __name__ == "__main__":
    main()
