"""Inference cost of the three transfer strategies against stock nnU-Net's network.

The fine-tuning trainers predict with the planned U-Net itself, so they cost what stock nnU-Net
costs. The linear probe runs the frozen denoiser once per timestep, then its classifier: k timesteps
should cost about k backbone passes. This times one forward pass on a batch of patches of the
configuration's size (as nnU-Net's sliding window does), per strategy and per number of timesteps.

    python benchmarks/inference_cost.py [--device cpu|cuda]

Writes ``benchmarks/results/inference_cost/<device>/results.json``, ``report.md`` and ``timings.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_diffusion_pretrain.transfer.feature_probe import DiffusionFeatureClassifier
from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings
from nnunet_diffusion_pretrain.training import nnUNetTrainerDiffusionPretrain

REPO = Path(__file__).resolve().parents[1]
PLANS = REPO / "benchmarks" / "work" / "iteration_cost" / "preprocessed" / "Dataset980_IterationCostPhantom"


def time_forward(network: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[float]:
    times = []
    with torch.no_grad():
        network(x)  # warm-up
        for _ in range(repeats):
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            network(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configuration", default="2d")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if not (PLANS / "nnUNetPlans.json").is_file():
        raise SystemExit(f"plans missing: run benchmarks/iteration_cost.py first (it plans the phantom in {PLANS})")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count())
    pm = PlansManager(str(PLANS / "nnUNetPlans.json"))
    cm = pm.get_configuration(args.configuration)
    x = torch.randn(args.batch, 1, *cm.patch_size, device=device)
    networks = {"stock U-Net (Finetune, DecoderFinetune)":
                nnUNetTrainer.build_network_architecture(pm, cm, 1, 5, enable_deep_supervision=False)}
    for k in (1, 2, 3):
        denoiser = nnUNetTrainerDiffusionPretrain.build_network_architecture(pm, cm, 1, 1)
        networks[f"LinearProbe, {k} timestep{'s' if k > 1 else ''}"] = DiffusionFeatureClassifier(
            denoiser, 5, DiffusionSettings(), timesteps=[50, 150, 250][:k])
    timings = {name: time_forward(net.to(device).eval(), x, args.repeats) for name, net in networks.items()}
    stock = float(np.median(timings[next(iter(timings))]))
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": args.device,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
        "settings": {"configuration": args.configuration, "patch_size": list(cm.patch_size), "batch": args.batch,
                     "repeats": args.repeats, "dataset": "built-in phantom (benchmarks/iteration_cost.py plans)"},
        "seconds_per_forward": {n: {"median": float(np.median(t)), "all": t} for n, t in timings.items()},
        "relative_to_stock": {n: float(np.median(t)) / stock for n, t in timings.items()},
    }
    out = args.output or REPO / "benchmarks" / "results" / "inference_cost" / args.device
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    rows = "\n".join(f"| {n} | {results['seconds_per_forward'][n]['median'] * 1e3:.1f} | "
                     f"{results['relative_to_stock'][n]:.2f} |" for n in timings)
    (out / "report.md").write_text(f"""# Inference cost per strategy

Date: {results['date']}. Device: {args.device} ({results['machine']['gpu'] or platform.processor() or 'CPU'},
{os.cpu_count()} cores), torch {torch.__version__}. One forward pass on {args.batch} patches of
{list(cm.patch_size)} ({args.configuration}, built-in phantom plans), median of {args.repeats} after a warm-up.
nnU-Net's sliding window makes this call once per tile (and per mirror with test-time augmentation).

| network | ms per forward | x stock |
|---|---|---|
{rows}

The fine-tuning trainers predict with the planned U-Net itself (same cost as stock nnU-Net). The
linear probe runs the frozen denoiser once per timestep (k timesteps = k backbone passes) plus its
small classifier.
""")
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(list(timings), [results["seconds_per_forward"][n]["median"] * 1e3 for n in timings])
    ax.set_xlabel("ms per forward pass")
    fig.tight_layout()
    fig.savefig(out / "timings.png", dpi=100)
    plt.close(fig)
    print(out / "report.md")
    print(rows)


if __name__ == "__main__":
    main()
