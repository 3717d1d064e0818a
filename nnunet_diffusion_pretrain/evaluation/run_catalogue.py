"""Every training run of a benchmark, derived from the low-label manifests, and where nnU-Net puts
its results. One run = one method on one fold (one label budget, one repeat)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nnunet_diffusion_pretrain.transfer.lowlabel_splits import MANIFEST_NAME

STOCK = "nnUNetTrainerBudget"
PRETRAINER = "nnUNetTrainerDiffusionPretrain"
FINETUNE = "nnUNetTrainerDiffusionFinetune"
TRAINERS = (STOCK, FINETUNE, "nnUNetTrainerDiffusionDecoderFinetune", "nnUNetTrainerDiffusionLinearProbe")
SYNTHETIC = f"{FINETUNE}+synthetic"  # fine-tune all again, with pseudo-labelled generated images added
METHODS = (*TRAINERS, SYNTHETIC)
METHOD_NAMES = dict(zip(("stock", "finetune", "decoder", "probe"), TRAINERS))  # --methods
METHOD_LABELS = {STOCK: "stock nnU-Net", FINETUNE: "diffusion: fine-tune all",
                 "nnUNetTrainerDiffusionDecoderFinetune": "diffusion: fine-tune decoder",
                 "nnUNetTrainerDiffusionLinearProbe": "diffusion: linear probe",
                 SYNTHETIC: "diffusion: fine-tune all + synthetic"}


@dataclass(frozen=True)
class TrainingRun:
    method: str
    kind: str  # "cases", "slices" or "all" (the upper bound)
    budget: float
    repeat: int
    dataset: str
    fold: int
    train: tuple[str, ...]
    labeler_dataset: str = ""  # synthetic runs: the fine-tuned run that labels the generated images
    labeler_fold: int = -1
    trainer_suffix: str = ""  # "_keepSides" where labels have a side
    cv_fold: int | None = None  # the cross-validation fold (held-out group and pretraining run), if any

    @property
    def trainer(self) -> str:
        return self.method.split("+")[0] + self.trainer_suffix

    @property
    def run_id(self) -> str:
        return f"{self.method}__{self.kind}{self.budget:g}__r{self.repeat}" + \
            (f"__cv{self.cv_fold}" if self.cv_fold is not None else "")

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
        return results_root / self.dataset / f"{self.trainer}__{plans}__{configuration}" / f"fold_{self.fold}"


def start_arguments(fold: Path, pretrained: Path | None) -> list[str]:
    """``nnUNetv2_train`` arguments for a run in ``fold``: continue it (``--c``) if it has a
    checkpoint, so a killed run resumes, else start it, from ``pretrained`` weights if given."""
    if any((fold / f"checkpoint_{k}.pth").is_file() for k in ("latest", "final")):
        return ["--c"]
    return ["-pretrained_weights", str(pretrained)] if pretrained else []


def budget_order(kind: str, budget: float) -> tuple[int, float]:
    """Sort key from fewest to most labels: slice budgets, then volumes, then everything."""
    return {"slices": 0, "cases": 1, "all": 2}[kind], budget


def catalogue(preprocessed_folders: list[Path], synthetic_first_id: int | None = None,
              trainer_suffix: str = "", trainers: tuple[str, ...] = TRAINERS) -> list[TrainingRun]:
    """All runs named by the manifests: each of ``trainers`` (default the four methods) per
    low-label fold, stock alone on the all-labelled fold and, with ``synthetic_first_id``,
    synthetic-data augmentation at the smallest volume and slice budgets (derived datasets numbered
    from that ID); every trainer name with ``trainer_suffix``."""
    runs = []
    for folder in preprocessed_folders:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        for f in manifest["folds"]:
            for method in ((STOCK,) if f["kind"] == "all" else trainers):
                runs.append(TrainingRun(method, f["kind"], f["budget"], f["repeat"], f["dataset"], f["fold"],
                                        tuple(f["train"]), trainer_suffix=trainer_suffix))
    if synthetic_first_id is not None:
        labelers = sorted((r for r in runs if r.method == FINETUNE), key=lambda r: (r.kind, r.budget, r.repeat))
        smallest = {kind: min(r.budget for r in labelers if r.kind == kind) for kind in {r.kind for r in labelers}}
        chosen = [r for r in labelers if r.budget == smallest[r.kind]]
        for i, r in enumerate(chosen):
            name = f"Dataset{synthetic_first_id + i:03d}_{r.dataset.split('_', 1)[1]}Synthetic"
            runs.append(TrainingRun(SYNTHETIC, r.kind, r.budget, r.repeat, name, 0, r.train, r.dataset, r.fold,
                                    trainer_suffix))
    return sorted(runs, key=lambda r: (budget_order(r.kind, r.budget), r.repeat, METHODS.index(r.method)))
