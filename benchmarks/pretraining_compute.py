"""What does longer diffusion pretraining buy? The gain over stock nnU-Net against pretraining compute.

One pretraining of a benchmark work folder, run with ``nnUNet_pretrain_keep`` so that it kept its EMA
checkpoints (``checkpoint_it<N>.pth``) at several lengths. For each kept checkpoint:

- fine-tune all, fine-tune decoder and linear probe on the validation fold of
  benchmarks/budget_calibration.py (one labelled training volume, validated on two other training
  volumes), against stock nnU-Net trained on the same fold. The benchmark's held-out cases are never
  used here: this curve chooses the pretraining length of the cross-validated study.
- the held-out denoising loss that the pretraining logged (EMA weights; the mean over the last
  ``--loss-epochs`` epochs before the checkpoint, at random t and at t = T/2);
- sample quality (benchmarks/generation_quality.py): sFID and precision/recall of DDIM samples against
  the held-out slices, all in ONE feature space (the longest checkpoint's encoder), and a sample grid.

Choice rule, fixed before any result: the length for the cross-validated study is the kept length with
the highest validation Dice of fine-tune all (the default transfer); within ``--tie`` of the best, the
shorter one.

    nnUNet_pretrain_keep=8000,16000,32000,64000 nnUNetv2_diffusion_benchmark ... --folds 3 --pretrain-epochs 640 \\
        -w benchmarks/work/btcv6_compute
    python benchmarks/pretraining_compute.py --work benchmarks/work/btcv6_compute/fold_0 --name btcv6_cv3_fold0

Resumable (each finished run is kept by budget_calibration.py and reused). Writes
benchmarks/results/pretraining_compute/<name>/{results.json, report.md, gain_vs_compute.png}; report.md
ends with the folder's hand-written notes.md, if there is one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely  # noqa: E402
from nnunet_diffusion_pretrain.evaluation.axial_plans import AXIAL_PLANS  # noqa: E402
from nnunet_diffusion_pretrain.evaluation.report import with_hand_notes  # noqa: E402
from nnunet_diffusion_pretrain.evaluation.work_folder import open_work_folder  # noqa: E402
from nnunet_diffusion_pretrain.training.diffusion_pretrain_trainer import MID_T_LOSS_KEY  # noqa: E402
from nnunet_diffusion_pretrain.transfer.sided_labels import KEEP_SIDES_SUFFIX, sided_labels  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STOCK = "nnUNetTrainerBudget"
ARMS = {"nnUNetTrainerDiffusionFinetune": "fine-tune all", "nnUNetTrainerDiffusionDecoderFinetune": "fine-tune decoder",
        "nnUNetTrainerDiffusionLinearProbe": "linear probe"}
GENERATION = ("sfid", "precision", "recall")


def kept_checkpoints(fold: Path) -> dict[int, Path]:
    """The pretraining's kept checkpoints by iteration count."""
    found = {int(m.group(1)): p for p in fold.glob("checkpoint_it*.pth") if (m := re.fullmatch(r"checkpoint_it(\d+)\.pth", p.name))}
    return dict(sorted(found.items()))


def logged_losses(checkpoint: Path, epochs: int) -> dict[str, float]:
    """Mean held-out denoising losses of the last ``epochs`` epochs the checkpoint's log holds."""
    logging = load_checkpoint_safely(checkpoint)["logging"]
    last = lambda key: float(np.mean(logging[key][-epochs:]))  # noqa: E731
    return {"loss": last("val_losses"), "loss_mid_t": last(MID_T_LOSS_KEY), "epochs": epochs}


def calibrate(work: Path, trainers: list[str], args: argparse.Namespace, pretrained: Path | None, tag: str,
              name: str) -> list[dict]:
    """budget_calibration.py on its validation fold; its finished runs are reused."""
    command = [sys.executable, str(REPO / "benchmarks" / "budget_calibration.py"), "--work", str(work), "--iterations",
               str(args.iterations), "--num-train", "1", "--num-val", "2", "--runs", str(args.runs), "--name", name,
               "--trainers", *trainers] + (["--pretrained", str(pretrained), "--tag", tag] if pretrained else [])
    subprocess.run(command, check=True)
    return json.loads((REPO / "benchmarks" / "results" / "budget_calibration" / name / "results.json").read_text())["results"]


def generation(work: Path, checkpoint: Path, features: Path, name: str, samples: int) -> dict:
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "generation_quality.py"), "--work", str(work),
                    "--checkpoint", str(checkpoint), "--feature-checkpoint", str(features), "--name", name,
                    "-n", str(samples)], check=True)
    result = json.loads((REPO / "benchmarks" / "results" / "generation_quality" / name / "results.json").read_text())
    return {row: {m: values["nnunet_encoder"][m] for m in GENERATION} for row, values in result["rows"].items()}


def mean_dice(results: list[dict], trainer: str) -> dict:
    dice = [r["mean_dice"] for r in results if r["trainer"] == trainer]
    return {"mean_dice": float(np.mean(dice)), "runs": dice, "seconds": [r["seconds"] for r in results if r["trainer"] == trainer]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a benchmark (fold) work folder whose pretraining kept checkpoints")
    parser.add_argument("--name", required=True, help="results folder under benchmarks/results/pretraining_compute")
    parser.add_argument("--iterations", type=int, default=1600, help="iterations of every segmentation run; default 1600")
    parser.add_argument("--runs", type=int, default=1, help="runs of each arm per checkpoint; default 1")
    parser.add_argument("--samples", type=int, default=256, help="DDIM samples per checkpoint (0: no sampling); default 256")
    parser.add_argument("--loss-epochs", type=int, default=20, help="epochs averaged for the denoising loss; default 20")
    parser.add_argument("--tie", type=float, default=0.01, help="choice rule's tie margin in Dice; default 0.01")
    args = parser.parse_args()

    bench = open_work_folder(args.work)
    fold = bench.pretraining_checkpoint().parent
    kept = kept_checkpoints(fold)
    if not kept:
        raise SystemExit(f"{fold} holds no kept checkpoints (checkpoint_it<N>.pth): pretrain with nnUNet_pretrain_keep")
    raw_json = json.loads((bench.folder / "nnUNet_raw" / bench.dataset / "dataset.json").read_text())
    suffix = KEEP_SIDES_SUFFIX if sided_labels(raw_json) else ""
    batch = PlansManager(str(bench.preprocessed / f"{AXIAL_PLANS}.json")).get_configuration(bench.configuration).batch_size
    started = time.time()

    stock = mean_dice(calibrate(bench.folder, [STOCK + suffix], args, None, "", f"{args.name}_stock"), STOCK + suffix)
    points = []
    for iterations, checkpoint in kept.items():
        results = calibrate(bench.folder, [a + suffix for a in ARMS], args, checkpoint, f"_it{iterations}",
                            f"{args.name}_it{iterations}")
        arms = {a: mean_dice(results, a + suffix) for a in ARMS}
        points.append({"iterations": iterations, "images_seen": iterations * batch, "checkpoint": checkpoint.name,
                       "arms": {a: {**v, "gain": v["mean_dice"] - stock["mean_dice"]} for a, v in arms.items()},
                       "denoising_loss": logged_losses(checkpoint, args.loss_epochs)})
    out = REPO / "benchmarks" / "results" / "pretraining_compute" / args.name
    out.mkdir(parents=True, exist_ok=True)
    write(out, args, bench, fold, batch, suffix, stock, points, None, started)  # a report before the slower sampling
    if args.samples:
        features = kept[max(kept)]
        for point in points:
            point["generation"] = generation(bench.folder, fold / point["checkpoint"], features,
                                             f"{args.name}_it{point['iterations']}", args.samples)
        write(out, args, bench, fold, batch, suffix, stock, points, features.name, started)


def write(out: Path, args: argparse.Namespace, bench, fold: Path, batch: int, suffix: str, stock: dict,
          points: list[dict], features: str | None, started: float) -> None:
    finetune = [(p["arms"]["nnUNetTrainerDiffusionFinetune"]["mean_dice"], p["iterations"]) for p in points]
    best = max(d for d, _ in finetune)
    chosen = min(i for d, i in finetune if d >= best - args.tie)
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
               "work": str(bench.folder), "pretraining_fold": str(fold), "held_out_unused": bench.held_out,
               "batch_size": batch, "iterations": args.iterations, "runs": args.runs, "trainer_suffix": suffix,
               "stock": stock, "points": points, "feature_checkpoint": features,
               "choice": {"rule": f"highest fine-tune-all validation Dice; within {args.tie} of it, the shorter",
                          "iterations": chosen},
               "seconds_this_invocation": round(time.time() - started, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(points, stock, batch, out / "gain_vs_compute.png")
    (out / "report.md").write_text(with_hand_notes(report(results), out))
    print(f"written: {out / 'report.md'}", flush=True)


def plot(points: list[dict], stock: dict, batch: int, path: Path) -> None:
    x = [p["iterations"] for p in points]
    sampled = all("generation" in p for p in points)
    fig, axes = plt.subplots(1, 3 if sampled else 2, figsize=(15 if sampled else 10, 4.2))
    for arm, label in ARMS.items():
        axes[0].plot(x, [p["arms"][arm]["gain"] for p in points], "o-", label=label)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set(ylabel=f"validation Dice - stock ({stock['mean_dice']:.3f})", title="gain over stock nnU-Net")
    axes[0].legend()
    axes[1].plot(x, [p["denoising_loss"]["loss"] for p in points], "o-", label="random t")
    axes[1].plot(x, [p["denoising_loss"]["loss_mid_t"] for p in points], "s--", label="t = T/2")
    axes[1].set(ylabel="denoising loss (EMA, held-out cases)", title="held-out denoising loss")
    axes[1].legend()
    if sampled:
        sample_quality(axes[2], points)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{i // 1000}k" for i in x])
        ax.set_xlabel("pretraining iterations")
        top = ax.secondary_xaxis("top", functions=(lambda i: i * batch, lambda s: s / batch))
        top.set_xlabel(f"images seen (batch {batch})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_quality(ax, points: list[dict]) -> None:
    x = [p["iterations"] for p in points]
    ax.plot(x, [p["generation"]["generated (DDIM)"]["sfid"] for p in points], "o-", color="C3", label="sFID")
    ax.axhline(points[-1]["generation"]["real training slices"]["sfid"], color="C3", ls=":", label="sFID, real slices")
    ax.set(ylabel="sFID (lower is better)", title="sample quality")
    twin = ax.twinx()
    for metric, style in (("precision", "s--"), ("recall", "^--")):
        twin.plot(x, [p["generation"]["generated (DDIM)"][metric] for p in points], style, label=metric)
    twin.set(ylabel="precision / recall", ylim=(0, 1))
    lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8)


def report(results: dict) -> str:
    points, stock = results["points"], results["stock"]
    sampled = results["feature_checkpoint"] is not None
    lines = ["# Pretraining compute: gain over stock nnU-Net against pretraining iterations", "",
             f"{results['date']}, {results['machine']['cpu_count']} CPUs ({results['machine']['platform']}). "
             f"Work folder `{Path(results['work']).parent.name}/{Path(results['work']).name}`; kept EMA checkpoints of "
             f"one pretraining (batch {results['batch_size']}); every segmentation run {results['iterations']} "
             f"iterations, {results['runs']} run(s) per arm and checkpoint, trainers with suffix "
             f"`{results['trainer_suffix']}`. Dice: validation fold of `benchmarks/budget_calibration.py` (one "
             f"labelled training volume, two other training volumes validated); the held-out cases "
             f"{', '.join(results['held_out_unused'])} are not used for Dice. Denoising loss: the pretraining's own "
             f"validation on the held-out cases' images, mean of the last epochs before each checkpoint. "
             + (f"Generation: DDIM samples against held-out slices, features of `{results['feature_checkpoint']}` for "
                "every row." if sampled else "Generation: not measured in this report.")
             + " (`benchmarks/pretraining_compute.py`)", "",
             f"Stock nnU-Net: {stock['mean_dice']:.3f} (runs {', '.join(f'{d:.3f}' for d in stock['runs'])}).", "",
             "| iterations | images seen | " + " | ".join(f"{label} (gain)" for label in ARMS.values())
             + " | denoising loss (t = T/2) | sFID | precision | recall |", "|---|---|" + "---|" * (len(ARMS) + 4)]
    for p in points:
        generated = p["generation"]["generated (DDIM)"] if sampled else None
        lines.append(f"| {p['iterations']} | {p['images_seen']} | " + " | ".join(
            f"{p['arms'][a]['mean_dice']:.3f} ({p['arms'][a]['gain']:+.3f})" for a in ARMS)
            + f" | {p['denoising_loss']['loss']:.4f} ({p['denoising_loss']['loss_mid_t']:.4f}) | "
            + (" | ".join(f"{generated[m]:.3f}" for m in GENERATION) if sampled else "- | - | -") + " |")
    if sampled:
        floor = points[-1]["generation"]["real training slices"]
        lines += ["", "Floor of the generation metrics (real training slices against the held-out slices, same "
                  "features): " + ", ".join(f"{m} {floor[m]:.3f}" for m in GENERATION) + "."]
    seconds = sum(s for p in points for a in p["arms"].values() for s in a["seconds"]) + sum(stock["seconds"])
    lines += ["", f"Choice ({results['choice']['rule']}): **{results['choice']['iterations']} iterations**.", "",
              f"Wall time of the segmentation runs: {seconds / 60:.0f} min; this invocation "
              f"{results['seconds_this_invocation'] / 60:.0f} min (finished runs are reused).", "",
              "![gain, loss and sample quality against pretraining iterations](gain_vs_compute.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
