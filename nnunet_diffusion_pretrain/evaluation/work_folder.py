"""A finished (or running) benchmark's work folder, read back by the scripts that build on it
(budget calibration, generation quality): which dataset, which cases are held out, which fold
holds every training case, where its pretraining checkpoint is, and nnU-Net's variables."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nnunet_diffusion_pretrain.evaluation.axial_plans import AXIAL_PLANS
from nnunet_diffusion_pretrain.evaluation.run_catalogue import PRETRAINER
from nnunet_diffusion_pretrain.subprocess_steps import ext_trainer_folder
from nnunet_diffusion_pretrain.pool.derived_dataset import DERIVED_MARKER
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import MANIFEST_NAME
from nnunet_diffusion_pretrain.pool.unlabeled_pool import POOL_ENV


@dataclass(frozen=True)
class BenchmarkWork:
    folder: Path
    preprocessed: Path  # the source dataset's preprocessed folder (not the derived slice dataset)
    manifest: dict
    state: dict

    @property
    def dataset(self) -> str:
        return self.preprocessed.name

    @property
    def configuration(self) -> str:
        return self.state["settings"]["preset"]["configuration"]

    @property
    def held_out(self) -> list[str]:
        return self.manifest["held_out"]

    @property
    def all_fold(self) -> dict:
        """The fold with every training case (the upper bound; the pretraining's images)."""
        return next(f for f in self.manifest["folds"] if f["kind"] == "all")

    def pretraining_checkpoint(self) -> Path:
        return pretraining_fold(self.folder, self.dataset, self.configuration, self.all_fold["fold"]) / \
            "checkpoint_final.pth"

    def env(self, **extra: str) -> dict:
        return nnunet_folders_env(self.folder, **extra)


def nnunet_folders_env(work: Path, **extra: str) -> dict:
    """The environment for stock commands on a work folder's own nnU-Net folders (never the user's,
    nor the user's unlabeled pool: it defaults to one inside the work folder's nnUNet_preprocessed)."""
    env = {k: v for k, v in os.environ.items() if k != POOL_ENV}
    return dict(env, nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
                nnUNet_results=str(work / "nnUNet_results"), nnUNet_extTrainer=ext_trainer_folder(), **extra)


def training_budget_env(env: dict, epochs: int, iterations: int, val_iterations: int) -> dict:
    """``env`` with a training budget (pretraining or segmentation), and a checkpoint every 5 epochs
    (nnU-Net's 50 is longer than a whole short run, so a killed run would start over)."""
    return dict(env, nnUNet_num_epochs=str(epochs), nnUNet_num_iterations_per_epoch=str(iterations),
                nnUNet_num_val_iterations_per_epoch=str(val_iterations), nnUNet_save_every="5",
                nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0"))


def pretraining_fold(work: Path, dataset: str, configuration: str, fold: int, trainer: str = PRETRAINER) -> Path:
    """Where nnU-Net puts the benchmark's one diffusion pretraining run."""
    return work / "nnUNet_results" / dataset / f"{trainer}__{AXIAL_PLANS}__{configuration}" / f"fold_{fold}"


def open_work_folder(work: Path) -> BenchmarkWork:
    work = work.resolve()
    state_file = work / "benchmark_state.json"
    sources = [p for p in sorted((work / "nnUNet_preprocessed").glob("Dataset*"))
               if (p / MANIFEST_NAME).is_file() and not (work / "nnUNet_raw" / p.name / DERIVED_MARKER).exists()]
    if not state_file.is_file() or not sources:
        raise UserFacingError(f"{work} is not a benchmark work folder with splits (run nnUNetv2_diffusion_benchmark)")
    return BenchmarkWork(work, sources[0], json.loads((sources[0] / MANIFEST_NAME).read_text()),
                         json.loads(state_file.read_text()))
