"""``nnUNetv2_diffusion_sample``: draw synthetic images from a pretrained diffusion model.

    nnUNetv2_diffusion_sample -d 501 -c 2d -n 64 -o OUT
    nnUNetv2_diffusion_sample -d 501 -c 3d_fullres -n 8 -o OUT --sampler ddpm --steps 1000 -device cuda

Uses the pretraining checkpoint's EMA weights (nnUNet_results/DatasetX/TRAINER__PLANS__CONF/
fold_F/checkpoint_final.pth, or -chk FILE). Each sample is written as NIfTI at the configuration's
spacing with intensities mapped back from nnU-Net's normalisation to the dataset's scale
(Hounsfield units for raw CT; see samples.json for what scale each channel is on), plus a PNG grid.
The same seed and batch size give the same samples.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nnunet_diffusion_pretrain.cli.checkpoint_arguments import add_checkpoint_arguments, resolve_checkpoint
from nnunet_diffusion_pretrain.errors import exits_cleanly_on_user_errors
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.intensity_mapping import to_dataset_intensities
from nnunet_diffusion_pretrain.planned_dataset import load_planned_dataset
from nnunet_diffusion_pretrain.diffusion.pretrained_denoiser import load_pretrained_denoiser
from nnunet_diffusion_pretrain.diffusion.sampling import SAMPLERS, sample_images, write_sample_grid


@exits_cleanly_on_user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True, help="dataset name or ID")
    add_checkpoint_arguments(parser)
    parser.add_argument("-n", type=int, default=16, help="number of samples; default 16")
    parser.add_argument("-o", type=Path, required=True, help="output folder (must be empty or new)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="default ddim")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps; default 50")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic); default 0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the configuration's batch size")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    args = parser.parse_args()
    if args.n < 1 or args.steps < 1:
        parser.error("-n and --steps must be at least 1")
    if args.o.exists() and any(args.o.iterdir()) and not args.overwrite:
        raise UserFacingError(f"{args.o} is not empty; choose a new folder or pass --overwrite")

    dataset = load_planned_dataset(args.d, args.c, args.p)
    checkpoint = resolve_checkpoint(args, dataset)
    device = torch.device(args.device)
    denoiser = load_pretrained_denoiser(dataset, checkpoint, device)
    patch = list(dataset.configuration_manager.patch_size)
    batch_size = args.batch_size or dataset.configuration_manager.batch_size
    samples = sample_images(denoiser.network, denoiser.settings, (args.n, dataset.num_input_channels, *patch),
                            device, args.sampler, args.steps, args.eta, args.seed, batch_size)
    mapped, scales = to_dataset_intensities(samples.numpy(), dataset.configuration_manager.normalization_schemes,
                                            dataset.plans["foreground_intensity_properties_per_channel"])
    written = write_sample_grid(mapped, args.o, list(dataset.configuration_manager.spacing),
                                title=f"{dataset.name} {args.c}: {args.sampler.upper()} {args.steps} steps, "
                                      f"seed {args.seed}")
    (args.o / "samples.json").write_text(json.dumps({
        "checkpoint": str(checkpoint), "dataset": dataset.name, "configuration": args.c, "plans": args.p,
        "sampler": args.sampler, "steps": args.steps, "eta": args.eta, "seed": args.seed, "batch_size": batch_size,
        "num_samples": args.n, "patch_size": patch, "spacing": list(dataset.configuration_manager.spacing),
        "intensity_scale_per_channel": scales, "diffusion": denoiser.settings.to_dict()}, indent=2))
    print(f"{args.n} samples in {args.o} (grid: {written[-1]}); intensities: {'; '.join(scales)}")
    return 0
