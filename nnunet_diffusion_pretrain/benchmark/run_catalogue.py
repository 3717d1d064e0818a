"""Every training run of a benchmark, derived from the low-label manifests, and where nnU-Net puts
its results. One run = one method on one fold (one label budget, one repeat)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nnunet_diffusion_pretrain.lowlabel_splits import MANIFEST_NAME

STOCK = "nnUNetTrainerBudget"
PRETRAINER = "nnUNetTrainerDiffusionPretrain"
METHODS = (STOCK, "nnUNetTrainerDiffusionFinetune", "nnUNetTrainerDiffusionDecoderFinetune",
           "nnUNetTrainerDiffusionLinearProbe")
METHOD_LABELS = {STOCK: "stock nnU-Net", "nnUNetTrainerDiffusionFinetune": "diffusion: fine-tune all",
                 "nnUNetTrainerDiffusionDecoderFinetune": "diffusion: fine-tune decoder",
                 "nnUNetTrainerDiffusionLinearProbe": "diffusion: linear probe"}


@dataclass(frozen=True)
class TrainingRun:
    method: str
    kind: str  # "cases", "slices" or "all" (the upper bound)
    budget: float
    repeat: int
    dataset: str
    fold: int
    train: tuple[str, ...]

    @property
    def run_id(self) -> str:
        return f"{self.method}__{self.kind}{self.budget:g}__r{self.repeat}"

    @property
    def budget_label(self) -> str:
        if self.kind == "slices":
            return f"{self.budget:g} slices"
        if self.kind == "all":
            return f"all ({self.budget:g} volumes)"
        return f"{self.budget:g} volume" + ("s" if self.budget != 1 else "")

    @property
    def needs_pretrained_weights(self) -> bool:
        return self.method != STOCK

    def fold_folder(self, results_root: Path, plans: str, configuration: str) -> Path:
        return results_root / self.dataset / f"{self.method}__{plans}__{configuration}" / f"fold_{self.fold}"


def budget_order(kind: str, budget: float) -> tuple[int, float]:
    """Sort key from fewest to most labels: slice budgets, then volumes, then everything."""
    return {"slices": 0, "cases": 1, "all": 2}[kind], budget


def catalogue(preprocessed_folders: list[Path]) -> list[TrainingRun]:
    """All runs named by the manifests: four methods per low-label fold, stock alone on the
    all-labelled fold."""
    runs = []
    for folder in preprocessed_folders:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        for f in manifest["folds"]:
            methods = (STOCK,) if f["kind"] == "all" else METHODS
            for method in methods:
                runs.append(TrainingRun(method, f["kind"], f["budget"], f["repeat"], f["dataset"], f["fold"],
                                        tuple(f["train"])))
    return sorted(runs, key=lambda r: (budget_order(r.kind, r.budget), r.repeat, METHODS.index(r.method)))
