"""A training budget set from the environment, so every trainer (the stock baseline included)
gets the same epochs and iterations without editing code or multiplying ``_Xepochs`` classes."""
from __future__ import annotations

import os

BUDGET_VARIABLES = {
    "nnUNet_num_epochs": "num_epochs",
    "nnUNet_num_iterations_per_epoch": "num_iterations_per_epoch",
    "nnUNet_num_val_iterations_per_epoch": "num_val_iterations_per_epoch",
    "nnUNet_save_every": "save_every",
}


def positive_int_from_env(variable: str, default: int | None = None) -> int | None:
    """The variable's value as a positive integer, ``default`` if unset; a clear error otherwise."""
    raw = os.environ.get(variable, "")
    if raw == "":
        return default
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"{variable} must be a positive integer, got {raw!r}")
    return int(raw)


def apply_training_budget(trainer) -> dict[str, int]:
    """Override the trainer's schedule attributes from the variables that are set; returns them."""
    applied = {}
    for variable, attribute in BUDGET_VARIABLES.items():
        value = positive_int_from_env(variable)
        if value is not None:
            setattr(trainer, attribute, value)
            applied[attribute] = value
    return applied
