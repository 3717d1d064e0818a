"""Generation quality on real scans: a benchmark's pretraining checkpoint against held-out slices.

Two rows, both against the held-out volumes' slices (never seen in pretraining), through the
plugin's commands:
- real training slices (the pretraining's own images, at the samples' size and spacing): the
  floor, what two real sets of this size score against each other;
- N DDIM samples of the checkpoint (``nnUNetv2_diffusion_sample``, EMA weights).
Metrics from ``nnUNetv2_diffusion_fid``: FID, sFID, precision, recall, F1 with the pretrained nnU-Net
encoder as feature network (no download; NOT comparable to published FIDs), and with Inception too
when ``--inception-weights FILE`` exists.

    python benchmarks/generation_quality.py --work benchmarks/work/btcv6_cpu1600 -n 256

``--checkpoint`` samples from another checkpoint of the pretraining (a kept ``checkpoint_it<N>.pth``) and
``--feature-checkpoint`` fixes the feature network, so that checkpoints are compared in one feature
space (benchmarks/pretraining_compute.py).

Writes benchmarks/results/generation_quality/<work folder name or --name>/{results.json,report.md,samples.png};
report.md ends with the folder's hand-written notes.md, if there is one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from nnunet_diffusion_pretrain.evaluation.axial_plans import AXIAL_PLANS
from nnunet_diffusion_pretrain.evaluation.report import with_hand_notes
from nnunet_diffusion_pretrain.evaluation.work_folder import open_work_folder
from nnunet_diffusion_pretrain.subprocess_steps import console_script, run_step
from nnunet_diffusion_pretrain.pool.image_sets import read_slices, slice_geometry
from nnunet_diffusion_pretrain.diffusion.sampling import plot_sample_grid, write_sample_grid

REPO = Path(__file__).resolve().parents[1]
METRICS = ("fid", "sfid", "precision", "recall", "f1")
SHOWN_SAMPLES, SHOWN_REAL = 16, 4


def link_images(cases: list[str], images: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for source in sorted(images.glob(f"{case}_0000.*")):
            link = target / source.name
            if not link.exists():
                link.symlink_to(source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a benchmark work folder with a finished pretraining")
    parser.add_argument("-n", type=int, default=256, help="samples; default 256")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps; default 50")
    parser.add_argument("--max-images", type=int, default=256, help="slices per set; default 256")
    parser.add_argument("--inception-weights", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to sample from; default the pretraining's checkpoint_final.pth")
    parser.add_argument("--feature-checkpoint", type=Path, default=None,
                        help="checkpoint whose encoder gives the features; default --checkpoint")
    parser.add_argument("--name", default=None, help="results folder name; default the work folder's name")
    args = parser.parse_args()

    bench = open_work_folder(args.work)
    env = bench.env()
    study = args.name or bench.folder.name
    scratch = bench.folder / "generation_quality" / study
    out = REPO / "benchmarks" / "results" / "generation_quality" / study
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = (args.checkpoint or bench.pretraining_checkpoint()).resolve()
    feature_checkpoint = (args.feature_checkpoint or checkpoint).resolve()
    images = bench.folder / "nnUNet_raw" / bench.dataset / "imagesTr"
    held_out, training = scratch / "real_held_out", scratch / "real_training"
    link_images(bench.held_out, images, held_out)
    link_images(bench.all_fold["train"], images, training)

    samples = scratch / "samples"
    common = ["-d", bench.dataset[7:10], "-c", bench.configuration, "-p", AXIAL_PLANS]
    if not (samples / "samples.json").is_file():
        run_step(f"{args.n} DDIM samples", [console_script("nnUNetv2_diffusion_sample"), *common, "-chk",
                                            str(checkpoint), "-n", str(args.n),
                                            "--steps", str(args.steps), "-o", str(samples), "--overwrite"], env,
                 scratch / "sample.log")
    size, spacing = slice_geometry(samples)
    training_slices = scratch / "real_training_slices"
    if not training_slices.is_dir():  # real slices at the samples' size and spacing, as the sampler writes them
        slices = read_slices(training, size, spacing, args.max_images)
        write_sample_grid(slices[:, None], training_slices, list(spacing), title="real training slices")

    features = ["--features", "nnunet"] + (["inception", "--inception-weights", str(args.inception_weights)]
                                           if args.inception_weights and args.inception_weights.is_file() else [])
    rows = {}
    for name, fake in (("real training slices", training_slices), ("generated (DDIM)", samples)):
        result_file = scratch / f"fid_{fake.name}.json"
        run_step(f"metrics: held-out slices vs {name}", [
            console_script("nnUNetv2_diffusion_fid"), str(held_out), str(fake), *features, *common, "-chk",
            str(feature_checkpoint),
            "--max-images", str(args.max_images), "-o", str(result_file)], env, scratch / f"fid_{fake.name}.log")
        rows[name] = json.loads(result_file.read_text())

    sample_info = json.loads((samples / "samples.json").read_text())
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (out / "results.json").write_text(json.dumps({
        "date": date, "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "work": str(bench.folder), "checkpoint": str(checkpoint), "feature_checkpoint": str(feature_checkpoint),
        "held_out": bench.held_out,
        "training": bench.all_fold["train"], "samples": sample_info, "rows": rows}, indent=1))
    shown = read_slices(samples, size)[:SHOWN_SAMPLES, None]  # the sampler's grid of all N is too large to commit
    plot_sample_grid(shown, out / "samples.png", read_slices(held_out, size, spacing, SHOWN_REAL)[:, None],
                     f"first {len(shown)} of {sample_info['num_samples']} samples; below: held-out slices")
    lines = [f"# Generation quality: {bench.dataset}, {bench.configuration} pretraining", "",
             f"{date}, {os.cpu_count()} CPUs. Checkpoint `{checkpoint.relative_to(bench.folder)}` of the work folder "
             f"`{bench.folder.name}`; {sample_info['num_samples']} samples, {sample_info['sampler'].upper()} "
             f"{sample_info['steps']} steps, seed {sample_info['seed']}, EMA weights; reference: slices of the "
             f"held-out volumes {', '.join(bench.held_out)} at the samples' size {list(size)} and spacing "
             f"{[round(s, 3) for s in spacing]} mm (at most {args.max_images} per set, "
             f"`benchmarks/generation_quality.py`).", "",
             f"Feature network: the encoder of `{feature_checkpoint.name}` (domain features; **not comparable to "
             "published FIDs**, e.g. the paper's 11.32). The first row is the floor: two real sets of this size.", ""]
    for network in [k for k in ("nnunet_encoder", "inception") if k in rows["generated (DDIM)"]]:
        lines += [f"| {network} features: set vs held-out slices | slices | " + " | ".join(METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for name, result in rows.items():
            lines.append(f"| {name} | {result['num_fake_slices']} | "
                         + " | ".join(f"{result[network][m]:.3f}" for m in METRICS) + " |")
        lines.append("")
    lines += ["![samples](samples.png)", ""]
    (out / "report.md").write_text(with_hand_notes("\n".join(lines), out))
    print(f"written: {out / 'report.md'}")


if __name__ == "__main__":
    main()
