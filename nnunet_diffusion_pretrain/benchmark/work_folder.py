"""A finished (or running) benchmark's work folder, read back by the scripts that build on it
(budget calibration, generation quality): which dataset, which cases are held out, which fold
holds every training case, where its pretraining checkpoint is, and nnU-Net's variables."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nnunet_diffusion_pretrain.benchmark.axial_plans import AXIAL_PLANS
from nnunet_diffusion_pretrain.benchmark.run_catalogue import PRETRAINER
from nnunet_diffusion_pretrain.cli.setup_env import ext_trainer_folder
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.lowlabel_splits import MANIFEST_NAME


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
        return (self.folder / "nnUNet_results" / self.dataset / f"{PRETRAINER}__{AXIAL_PLANS}__{self.configuration}"
                / f"fold_{self.all_fold['fold']}" / "checkpoint_final.pth")

    def env(self, **extra: str) -> dict:
        """The environment for stock commands on this work folder's nnU-Net folders."""
        return dict(os.environ, nnUNet_raw=str(self.folder / "nnUNet_raw"),
                    nnUNet_preprocessed=str(self.folder / "nnUNet_preprocessed"),
                    nnUNet_results=str(self.folder / "nnUNet_results"), nnUNet_extTrainer=ext_trainer_folder(),
                    **extra)


def open_work_folder(work: Path) -> BenchmarkWork:
    work = work.resolve()
    state_file = work / "benchmark_state.json"
    sources = [p for p in sorted((work / "nnUNet_preprocessed").glob("Dataset*"))
               if (p / MANIFEST_NAME).is_file() and not p.name.endswith("Slices")]
    if not state_file.is_file() or not sources:
        raise UserFacingError(f"{work} is not a benchmark work folder with splits (run nnUNetv2_diffusion_benchmark)")
    return BenchmarkWork(work, sources[0], json.loads((sources[0] / MANIFEST_NAME).read_text()),
                         json.loads(state_file.read_text()))
