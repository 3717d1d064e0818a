"""Checkpoint files that are safe to load anywhere: CPU tensors only, nothing but plain Python
types (loadable with ``torch.load(weights_only=True)``), written atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

EMA_WEIGHTS = "network_weights"  # a pretraining checkpoint's EMA weights: nnU-Net's key, what later stages load
RAW_WEIGHTS = "online_network_weights"  # its raw optimiser weights: for --c, and to compare against the EMA


def portable(obj: Any) -> Any:
    """Tensors to CPU, numpy scalars and arrays to Python values, recursively."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable(v) for v in obj)
    return obj


def save_checkpoint_atomically(checkpoint: dict, filename: str | Path) -> None:
    """Write to a temporary file, then rename: a crash mid-write never replaces a good file."""
    filename = Path(filename)
    tmp = filename.with_name(filename.name + ".partial")
    torch.save(portable(checkpoint), tmp)
    os.replace(tmp, filename)


def load_checkpoint_safely(filename: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load without executing code embedded in the file."""
    return torch.load(filename, map_location=map_location, weights_only=True)
