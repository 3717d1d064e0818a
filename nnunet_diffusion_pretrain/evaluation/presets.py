"""The benchmark's presets: what every method gets (same budget for all) and which labels.

``cpu`` fits a 2-core machine in a few hours per dataset: a reduced configuration inheriting from
``2d`` (whole slices resampled to about 96 x 96, batch 4, a 5-stage U-Net with 16..128 features;
the scale of ../shared/docs/label-efficiency-probe.md), 4,000 pretraining iterations and 1,600
iterations per segmentation run to start with. That budget was chosen with
``benchmarks/budget_calibration.py`` on a training volume of the CT subset (held-out cases unused):
at 400 iterations stock nnU-Net learned only the liver; at 1,600 it learned all four organs, with
batch 4 as well as with batch 8 (so batch 4, at half the cost). On the MRI set it needed 3,200, so
``cpu`` calibrates the budget per dataset (``budget_doublings``, two runs per budget, the worse
counts: ``calibration_runs``, see budget_calibration.py). ``gpu``
uses nnU-Net's own ``2d`` configuration, with schedules shortened as stated (nnU-Net's default is 1000 epochs).
Synthetic-data augmentation adds ``synthetic_images`` generated, pseudo-labelled images at the
smallest volume and slice budgets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ReducedConfiguration:
    name: str
    patch_edge: int
    batch_size: int
    n_stages: int
    base_features: int
    max_features: int


@dataclass(frozen=True)
class BenchmarkPreset:
    name: str
    configuration: str
    reduced: ReducedConfiguration | None
    pretrain_epochs: int
    pretrain_iterations: int
    finetune_epochs: int
    finetune_iterations: int
    val_iterations: int
    num_labeled: tuple[int, ...]
    num_labeled_slices: tuple[int, ...]
    repeats: int
    synthetic_images: int  # generated images added at the smallest budgets (0: no synthetic-data row)
    synthetic_threshold: float = 0.9
    budget_doublings: int = 0  # times the segmentation budget may double until a validation volume is learned
    calibration_runs: int = 1  # runs that must all learn every organ before a budget is chosen

    @property
    def finetune_total(self) -> int:
        return self.finetune_epochs * self.finetune_iterations

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "cpu": BenchmarkPreset(
        name="cpu", configuration="2d_cpu",
        reduced=ReducedConfiguration("2d_cpu", patch_edge=96, batch_size=4, n_stages=5, base_features=16,
                                     max_features=128),
        pretrain_epochs=40, pretrain_iterations=100, finetune_epochs=32, finetune_iterations=50, val_iterations=2,
        num_labeled=(1,), num_labeled_slices=(4,), repeats=3, synthetic_images=32,
        budget_doublings=2, calibration_runs=2),
    "gpu": BenchmarkPreset(
        name="gpu", configuration="2d", reduced=None,
        pretrain_epochs=200, pretrain_iterations=250, finetune_epochs=100, finetune_iterations=250,
        val_iterations=50, num_labeled=(1, 2, 3), num_labeled_slices=(4, 16), repeats=3, synthetic_images=256),
}
