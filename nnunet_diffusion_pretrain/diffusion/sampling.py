"""Generate images with a trained denoiser (diffusers' DDIM and DDPM schedulers) and write them out."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings  # noqa: E402


SAMPLERS = ("ddim", "ddpm")


@torch.no_grad()
def sample_images(model: nn.Module, settings: DiffusionSettings, shape: tuple[int, ...], device: torch.device,
                  sampler: str = "ddim", num_steps: int = 50, eta: float = 0.0, seed: int = 0,
                  batch_size: int | None = None, progress: bool = True) -> torch.Tensor:
    """Draw ``shape[0]`` samples of shape ``shape[1:]`` (channels, *spatial) with diffusers' DDIM
    (``eta`` 0 = deterministic) or DDPM (ancestral) sampler; returns CPU float32. All randomness
    comes from one CPU generator seeded with ``seed``, so results repeat on any device. Samples are
    returned in nnU-Net's normalised intensities (``settings``' input map undone)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    scheduler = settings.ddim_scheduler() if sampler == "ddim" else settings.ddpm_scheduler()
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    batch_size = batch_size or shape[0]
    model.eval()
    batches = []
    for start in range(0, shape[0], batch_size):
        n = min(batch_size, shape[0] - start)
        x = torch.randn((n, *shape[1:]), generator=generator).to(device)
        steps = tqdm(scheduler.timesteps, desc=f"{sampler.upper()} sampling {start + n}/{shape[0]}",
                     disable=not progress)
        for t in steps:
            prediction = model(x, torch.full((n,), int(t), device=device, dtype=torch.long)).float()
            if sampler == "ddim":
                noise = torch.randn(x.shape, generator=generator).to(device) if eta > 0 else None
                x = scheduler.step(prediction, t, x, eta=eta, variance_noise=noise).prev_sample
            else:  # diffusers draws the variance noise on the CPU generator and moves it to the device
                x = scheduler.step(prediction, t, x, generator=generator).prev_sample
        batches.append(settings.to_network_space(x.float()).cpu())
    return torch.cat(batches)


def display_slice(sample: np.ndarray) -> np.ndarray:
    """First channel; the middle slice of 3D samples."""
    image = sample[0]
    return image[image.shape[0] // 2] if image.ndim == 3 else image


def write_sample_grid(samples: np.ndarray, output_folder: Path, spacing: list[float],
                      real_patches: np.ndarray | None = None, title: str = "") -> list[Path]:
    """Write each sample as NIfTI (the intensities given, the configuration's spacing) and a
    PNG grid, with real patches beside the generated ones where given. Returns the files written."""
    output_folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, sample in enumerate(samples):
        array = sample[0] if sample.shape[0] == 1 else np.moveaxis(sample, 0, -1)
        spatial = sample.shape[1:]
        if len(spatial) == 2:
            array = array[None]
        image = sitk.GetImageFromArray(array.astype(np.float32), isVector=sample.shape[0] > 1)
        spacing_zyx = ([1.0] if len(spatial) == 2 else []) + [float(s) for s in spacing]
        image.SetSpacing(spacing_zyx[::-1])
        path = output_folder / f"sample_{i:03d}.nii.gz"
        sitk.WriteImage(image, str(path), True)
        written.append(path)
    grid = output_folder / "samples.png"
    plot_sample_grid(samples, grid, real_patches, title)
    return written + [grid]


def plot_sample_grid(samples: np.ndarray, path: Path, real_patches: np.ndarray | None = None, title: str = "") -> None:
    """PNG grid of (N, C, ...) samples, with real patches below them where given."""
    rows = [("generated", samples)] + ([("real", real_patches)] if real_patches is not None else [])
    columns = int(np.ceil(np.sqrt(len(samples))))
    grid_rows = sum(int(np.ceil(len(s) / columns)) for _, s in rows)
    # one intensity window for all, taken from the real patches where given: the target distribution
    vmin, vmax = np.percentile(real_patches if real_patches is not None else samples, [0.5, 99.5])
    fig, axes = plt.subplots(grid_rows, columns, figsize=(2 * columns, 2 * grid_rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    row = 0
    for label, group in rows:
        for i, sample in enumerate(group):
            ax = axes[row + i // columns, i % columns]
            ax.imshow(display_slice(sample), cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(f"{label} {i}", fontsize=8)
        row += int(np.ceil(len(group) / columns))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
