"""Loading pretrained diffusion weights into a segmentation network, safely and verbosely.

Safe: ``torch.load(weights_only=True)`` onto the CPU (nothing in the file is executed; a file
written on a GPU opens anywhere). Strict: a checkpoint without our record, or made for other
preprocessing, another configuration, architecture or number of input channels, is refused with the
differences named; every tensor the target expects (except the freshly initialised output heads)
must be in the file with the same shape, so nothing is loaded partially without saying so.
Exact: a plain U-Net receives the denoiser's timestep conditioning folded into its norms at one
timestep t* (``ConditioningFold``), so it starts from the function the denoiser computed at t*.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from nnunet_diffusion_pretrain.checkpoint_io import EMA_WEIGHTS, load_checkpoint_safely
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.diffusion.pretraining_record import RECORD_KEY, check_format_version, record_mismatches
from nnunet_diffusion_pretrain.diffusion.time_conditioning import TimeConditionedUNet

FRESH_MARKERS = (".seg_layers.",)
TRANSFER_TIMESTEP_ENV = "nnUNet_transfer_timestep"
# chosen on a validation fold (CT subset, 1 labelled volume, 2 runs each: t* 0 / 50 / 250 -> mean Dice
# 0.531 / 0.567 / 0.600; benchmarks/results/budget_calibration/btcv6_cpu_method_transfer_timestep/)
DEFAULT_TRANSFER_TIMESTEP = 250


def transfer_timestep() -> int:
    """t* from ``nnUNet_transfer_timestep``, else the default."""
    raw = os.environ.get(TRANSFER_TIMESTEP_ENV, "").strip()
    if raw == "":
        return DEFAULT_TRANSFER_TIMESTEP
    if not raw.isdigit():
        raise UserFacingError(f"{TRANSFER_TIMESTEP_ENV} must be a timestep >= 0, got {raw!r}")
    return int(raw)


@dataclass
class ConditioningFold:
    """Load the checkpoint into ``denoiser`` (the pretraining architecture) and transfer its weights
    with the conditioning at ``timestep`` folded into the norms."""
    denoiser: TimeConditionedUNet
    timestep: int


@dataclass
class TransferReport:
    loaded: list[str]
    fresh: list[str]
    unused: list[str]  # in the file, not in the target (timestep conditioning, when not folded)
    record: dict
    folded_at: int | None = None  # t* whose conditioning was folded into the norms

    def summary(self) -> str:
        def group(key: str) -> str:
            parts = key.split(".")[:-1]  # drop "weight"/"bias"
            return ".".join(parts[:2]) if len(parts) > 1 and not parts[1].isdigit() else (parts or [key])[0]

        def groups(keys: list[str]) -> str:
            counts = Counter(group(k) for k in keys)
            return ", ".join(f"{g}.* ({n})" for g, n in sorted(counts.items())) or "nothing"
        folded = (f"timestep conditioning folded into the normalisation layers at t*={self.folded_at}\n"
                  if self.folded_at is not None else "")
        return (f"{folded}loaded {len(self.loaded)} tensors: {groups(self.loaded)}\n"
                f"fresh (not in the checkpoint by design): {len(self.fresh)} tensors: {groups(self.fresh)}\n"
                f"unused from the checkpoint: {len(self.unused)} tensors: {groups(self.unused)}")


def load_pretrained_diffusion_weights(target: nn.Module, checkpoint_file: str | Path, expected: dict,
                                      fresh_markers: tuple[str, ...] = FRESH_MARKERS,
                                      prefix: str = "", weights: str = EMA_WEIGHTS,
                                      fold: ConditioningFold | None = None) -> TransferReport:
    """Copy the checkpoint's EMA weights (with ``weights=RAW_WEIGHTS``: its raw optimiser weights) into
    ``target``; with ``prefix``, the target's ``prefix + key`` receives the checkpoint's ``key`` (a
    denoiser nested in a module) and everything outside the prefix starts fresh; with ``fold``, the
    conditioning at ``fold.timestep`` is folded into the norms first."""
    try:
        checkpoint = load_checkpoint_safely(checkpoint_file, map_location="cpu")
    except FileNotFoundError:
        raise UserFacingError(f"pretrained weights {checkpoint_file} do not exist") from None
    except Exception as e:  # unpickling refusals, truncated files
        raise UserFacingError(f"{checkpoint_file} cannot be loaded safely ({type(e).__name__}: "
                              f"{str(e).splitlines()[0]})") from e
    record = checkpoint.get(RECORD_KEY) if isinstance(checkpoint, dict) else None
    if record is None:
        raise UserFacingError(f"{checkpoint_file} is not a diffusion pretraining checkpoint of this plugin "
                              f"(no '{RECORD_KEY}' record); pretrain with -tr nnUNetTrainerDiffusionPretrain")
    check_format_version(record, checkpoint_file)
    mismatches = record_mismatches(record, expected)
    if mismatches:
        raise UserFacingError(f"{checkpoint_file} was pretrained for other plans and cannot be loaded: "
                              + "; ".join(mismatches))
    if weights not in checkpoint:
        raise UserFacingError(f"{checkpoint_file} has no '{weights}' to load")
    source = checkpoint[weights]
    if fold is not None:
        steps = record.get("num_train_timesteps", 1000)
        if not 0 <= fold.timestep < steps:
            raise UserFacingError(f"the transfer timestep must lie in [0, {steps}), got {fold.timestep}")
        fold.denoiser.load_state_dict(source)
        source = fold.denoiser.folded_state_dict(fold.timestep)
    source = {prefix + k: v for k, v in source.items()}
    state = target.state_dict()
    loaded = [k for k in state if k.startswith(prefix) and not any(m in k for m in fresh_markers)]
    fresh = [k for k in state if k not in loaded]
    problems = [k for k in loaded if k not in source or source[k].shape != state[k].shape]
    if problems:
        raise UserFacingError(f"{checkpoint_file} lacks or mis-shapes {len(problems)} tensors the network needs "
                              f"(first: {problems[0]}); refusing a partial load")
    target.load_state_dict({**state, **{k: source[k] for k in loaded}})
    unused = [k for k in source if k not in state and not any(m in k for m in fresh_markers)]
    return TransferReport(loaded, fresh, unused, record, fold.timestep if fold is not None else None)
