"""Cost of one diffusion pretraining iteration against one stock nnU-Net training iteration.

Both trainers are built from the same plans (the built-in phantom, planned by stock nnU-Net) and
run ``train_step`` on the same device with the plans' batch size, on batches prefetched from their
own data loaders, so only the step is timed (forward, loss, backward, optimiser; for the diffusion
trainer also noising and the EMA update). Timed blocks of the two alternate, so drift in the
machine's speed hits both alike. Target: diffusion / stock <= 1.15.

    python benchmarks/iteration_cost.py [--device cpu|cuda] [--configurations 2d 3d_fullres]

Writes ``benchmarks/results/iteration_cost/<device>/results.json``, ``report.md`` and ``timings.png``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work" / "iteration_cost"
DATASET_ID, DATASET_NAME = 980, "IterationCostPhantom"
os.environ.update({"nnUNet_raw": str(WORK / "raw"), "nnUNet_preprocessed": str(WORK / "preprocessed"),
                   "nnUNet_results": str(WORK / "results"), "nnUNet_n_proc_DA": "0"})

import numpy as np  # noqa: E402
import torch  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from nnunet_diffusion_pretrain.subprocess_steps import console_script  # noqa: E402
from nnunet_diffusion_pretrain.phantom import raw_dataset_folder, write_phantom_dataset  # noqa: E402
from nnunet_diffusion_pretrain.training import nnUNetTrainerDiffusionPretrain  # noqa: E402

TARGET_RATIO = 1.15


def prepare_dataset() -> Path:
    folder = raw_dataset_folder(DATASET_ID, DATASET_NAME)
    preprocessed = WORK / "preprocessed" / folder.name
    if not (preprocessed / "nnUNetPlans.json").is_file():
        write_phantom_dataset(folder, num_labelled=8, overwrite=True)
        subprocess.run([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID),
                        "-c", "2d", "3d_fullres", "-np", "2"], check=True,
                       env={k: v for k, v in os.environ.items() if k != "nnUNet_n_proc_DA"})  # planning crashes on 0
    return preprocessed


def make_trainer(cls, preprocessed: Path, configuration: str, device: torch.device):
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    trainer = cls(copy.deepcopy(plans), configuration, "all", dataset_json, device)
    trainer.on_train_start()
    trainer.network.train()
    return trainer


def timed_block(trainer, batches: list, device: torch.device) -> list[float]:
    times = []
    for batch in batches:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def measure(configuration: str, preprocessed: Path, device: torch.device, rounds: int, block: int,
            warmup: int) -> dict:
    trainers = {"stock nnUNetTrainer": make_trainer(nnUNetTrainer, preprocessed, configuration, device),
                "nnUNetTrainerDiffusionPretrain": make_trainer(nnUNetTrainerDiffusionPretrain, preprocessed,
                                                               configuration, device)}
    batches = {name: [next(t.dataloader_train) for _ in range(block)] for name, t in trainers.items()}
    for name, t in trainers.items():
        timed_block(t, batches[name][:warmup] or batches[name], device)
    times = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, t in trainers.items():
            times[name] += timed_block(t, batches[name], device)
    for t in trainers.values():
        t.on_train_end()
    stock, diffusion = (np.median(times[n]) for n in trainers)
    return {
        "configuration": configuration,
        "batch_size": trainers["stock nnUNetTrainer"].batch_size,
        "patch_size": list(trainers["stock nnUNetTrainer"].configuration_manager.patch_size),
        "network": trainers["stock nnUNetTrainer"].configuration_manager.network_arch_class_name.split(".")[-1],
        "seconds_per_iteration": {n: {"median": float(np.median(v)), "min": float(np.min(v)),
                                      "max": float(np.max(v)), "n": len(v), "all": [float(x) for x in v]}
                                  for n, v in times.items()},
        "ratio_of_medians": float(diffusion / stock),
        "meets_target": bool(diffusion / stock <= TARGET_RATIO),
    }


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if "model name" in l)
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_report(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    rows = []
    for r in results["measurements"]:
        s = r["seconds_per_iteration"]
        stock, diff = s["stock nnUNetTrainer"], s["nnUNetTrainerDiffusionPretrain"]
        rows.append(f"| {r['configuration']} | {r['network']} | {r['batch_size']} x {r['patch_size']} | "
                    f"{stock['median'] * 1e3:.1f} ({stock['min'] * 1e3:.1f}-{stock['max'] * 1e3:.1f}) | "
                    f"{diff['median'] * 1e3:.1f} ({diff['min'] * 1e3:.1f}-{diff['max'] * 1e3:.1f}) | "
                    f"**{r['ratio_of_medians']:.3f}** | {'yes' if r['meets_target'] else 'NO'} |")
    m = results["machine"]
    report = f"""# Iteration cost: diffusion pretraining vs stock nnU-Net

Date: {results['date']}. Device: {results['device']} ({m.get('gpu', m['cpu_model'])}, {m['cpu_count']} CPU cores,
{m['torch_threads']} torch threads). torch {m['torch']}, Python {m['python']}, {m['platform']}.
torch.compile: {results['settings']['compile']}.

Same plans (built-in phantom, planned by stock `nnUNetv2_plan_and_preprocess`), same batch size,
same device; only `train_step` is timed, on prefetched batches, {results['settings']['rounds']} alternating
rounds of {results['settings']['block']} iterations per trainer after {results['settings']['warmup']} warm-up
iterations. Milliseconds per iteration: median (min-max). Target: ratio <= {TARGET_RATIO}.

| configuration | network | batch x patch | stock nnUNetTrainer [ms] | DiffusionPretrain [ms] | ratio | <= {TARGET_RATIO} |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

What differs per iteration: stock computes deep-supervision Dice + cross-entropy over all decoder
outputs; the diffusion step noises the batch (diffusers `DDPMScheduler.add_noise`), runs the same
U-Net with FiLM timestep conditioning on every stage and one output head, an MSE loss, and the EMA
update (`EMAModel.step`, foreach). Raw per-iteration times are in `results.json`.
"""
    (out / "report.md").write_text(report)
    fig, axes = plt.subplots(1, len(results["measurements"]), figsize=(5 * len(results["measurements"]), 4),
                             squeeze=False)
    for ax, r in zip(axes[0], results["measurements"]):
        names = list(r["seconds_per_iteration"])
        ax.boxplot([np.array(r["seconds_per_iteration"][n]["all"]) * 1e3 for n in names])
        ax.set_xticks([1, 2], ["stock", "diffusion"])
        ax.set_ylabel("ms per iteration")
        ax.set_title(f"{r['configuration']}: ratio {r['ratio_of_medians']:.3f}")
    fig.tight_layout()
    fig.savefig(out / "timings.png", dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="allow torch.compile on CUDA (nnU-Net's default)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    os.environ["nnUNet_compile"] = "t" if args.compile else "f"
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count())
    preprocessed = prepare_dataset()
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": args.device,
               "machine": machine(), "settings": {"rounds": args.rounds, "block": args.block, "warmup": args.warmup,
                                                   "compile": args.compile, "dataset": "built-in phantom"},
               "measurements": [measure(c, preprocessed, device, args.rounds, args.block, args.warmup)
                                for c in args.configurations]}
    out = args.output or REPO / "benchmarks" / "results" / "iteration_cost" / args.device
    write_report(results, out)
    for r in results["measurements"]:
        print(f"{r['configuration']}: diffusion/stock = {r['ratio_of_medians']:.3f} "
              f"(target <= {TARGET_RATIO}: {'met' if r['meets_target'] else 'NOT met'})")
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
