"""A look at what the diffusion model learns from, before spending GPU days on it.

One row per source (the labelled cases' images, then each pool case), each a batch drawn by the
pretraining trainer's own loader (``pretraining_loader``: normalisation, cropping, padding,
augmentation), all shown with one intensity window, so a flat or turned source stands out; each
row is titled with the pool checks' figures of its source.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class  # noqa: E402

from nnunet_diffusion_pretrain.errors import UserFacingError  # noqa: E402
from nnunet_diffusion_pretrain.planned_dataset import PlannedDataset  # noqa: E402
from nnunet_diffusion_pretrain.diffusion.pretraining_data import PretrainingImages, pretraining_loader  # noqa: E402
from nnunet_diffusion_pretrain.diffusion.sampling import display_slice  # noqa: E402
from nnunet_diffusion_pretrain.pool.unlabeled_pool import PoolManifest  # noqa: E402


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _pool_title(case_id: str, case: dict) -> str:
    checks = case.get("checks") or {}
    figures = checks.get("figures") or [{}]
    parts = [f"pool: {case_id}", f"clipped {_percent(figures[0].get('clipped'))}"]
    if checks.get("reoriented_to"):
        parts.append(f"reoriented {checks['stored_orientation']}->{checks['reoriented_to']}")
    if checks.get("window"):
        parts.append(f"window [{checks['window']['low']:g}, {checks['window']['high']:g}]")
    if checks.get("mismatch_allowed"):
        parts.append("MISMATCH ALLOWED")
    return ", ".join(parts)


def preview_rows(dataset: PlannedDataset, per_source: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(title, batch) per source; batches shaped (per_source, channels, *patch)."""
    pool = PoolManifest.open(dataset, create=False)
    patch_size = list(dataset.configuration_manager.patch_size)
    labelled_folder = dataset.preprocessed_folder / dataset.configuration_manager.data_identifier
    sources = []
    if labelled_folder.is_dir() and any(labelled_folder.iterdir()):
        labelled = infer_dataset_class(str(labelled_folder))(str(labelled_folder))
        reference = (pool.reference or {}).get("channels", [{}])[0].get("clipped")
        clipped = f"{reference[0]:.0%}-{reference[1]:.0%}" if reference else "n/a"
        sources.append((f"labelled cases ({len(labelled.identifiers)}), clipped {clipped}",
                        PretrainingImages(labelled, pool, [], patch_size)))
    for case_id, case in sorted(pool.cases.items()):
        sources.append((_pool_title(case_id, case), PretrainingImages(None, pool, [case_id], patch_size)))
    if not sources:
        raise UserFacingError(f"{dataset.name} {dataset.configuration} has neither preprocessed labelled images nor a "
                              f"pool in {pool.folder}; run nnUNetv2_plan_and_preprocess and "
                              f"nnUNetv2_diffusion_add_unlabeled first")
    np.random.seed(seed)
    torch.manual_seed(seed)
    return [(title, next(pretraining_loader(images, patch_size, per_source))["data"].numpy())
            for title, images in sources]


def write_preview(rows: list[tuple[str, np.ndarray]], path: Path, title: str) -> None:
    """PNG grid, one row per source, one intensity window (the labelled row's 0.5/99.5 percentiles)."""
    columns = max(len(batch) for _, batch in rows)
    vmin, vmax = np.percentile(rows[0][1], [0.5, 99.5])
    height = 2.0 * len(rows) + 1.0  # inches; at 90 dpi a whole number of pixels
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.8 * columns, height), squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(batch):
                ax.imshow(display_slice(batch[c]), cmap="gray", vmin=vmin, vmax=vmax)
        # row titles may run over the next columns: fitting them would shrink every image
        axes[r, 0].text(0, 1.04, label, fontsize=8, transform=axes[r, 0].transAxes, va="bottom")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / height, wspace=0.05, hspace=0.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)
