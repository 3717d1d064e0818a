"""Loading pretrained diffusion weights into a segmentation network, safely and verbosely.

Safe: ``torch.load(weights_only=True)`` onto the CPU (nothing in the file is executed; a file
written on a GPU opens anywhere). Strict: a checkpoint without our record, or made for other
preprocessing, another configuration, architecture or number of input channels, is refused with the
differences named; every tensor the target expects (except the freshly initialised output heads)
must be in the file with the same shape, so nothing is loaded partially without saying so.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from nnunet_diffusion_pretrain.checkpoint_io import EMA_WEIGHTS, load_checkpoint_safely
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pretraining_record import RECORD_KEY, record_mismatches

FRESH_MARKERS = (".seg_layers.",)


@dataclass
class TransferReport:
    loaded: list[str]
    fresh: list[str]
    unused: list[str]  # in the file, not in the target (timestep conditioning, for the U-Net trainers)
    record: dict

    def summary(self) -> str:
        def group(key: str) -> str:
            parts = key.split(".")[:-1]  # drop "weight"/"bias"
            return ".".join(parts[:2]) if len(parts) > 1 and not parts[1].isdigit() else (parts or [key])[0]

        def groups(keys: list[str]) -> str:
            counts = Counter(group(k) for k in keys)
            return ", ".join(f"{g}.* ({n})" for g, n in sorted(counts.items())) or "nothing"
        return (f"loaded {len(self.loaded)} tensors: {groups(self.loaded)}\n"
                f"fresh (not in the checkpoint by design): {len(self.fresh)} tensors: {groups(self.fresh)}\n"
                f"unused from the checkpoint: {len(self.unused)} tensors: {groups(self.unused)}")


def load_pretrained_diffusion_weights(target: nn.Module, checkpoint_file: str | Path, expected: dict,
                                      fresh_markers: tuple[str, ...] = FRESH_MARKERS,
                                      prefix: str = "", weights: str = EMA_WEIGHTS) -> TransferReport:
    """Copy the checkpoint's EMA weights (with ``weights=RAW_WEIGHTS``: its raw optimiser weights) into
    ``target``; with ``prefix``, the target's ``prefix + key`` receives the checkpoint's ``key`` (a
    denoiser nested in a module) and everything outside the prefix starts fresh."""
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
    mismatches = record_mismatches(record, expected)
    if mismatches:
        raise UserFacingError(f"{checkpoint_file} was pretrained for other plans and cannot be loaded: "
                              + "; ".join(mismatches))
    if weights not in checkpoint:
        raise UserFacingError(f"{checkpoint_file} has no '{weights}' to load")
    source = {prefix + k: v for k, v in checkpoint[weights].items()}
    state = target.state_dict()
    loaded = [k for k in state if k.startswith(prefix) and not any(m in k for m in fresh_markers)]
    fresh = [k for k in state if k not in loaded]
    problems = [k for k in loaded if k not in source or source[k].shape != state[k].shape]
    if problems:
        raise UserFacingError(f"{checkpoint_file} lacks or mis-shapes {len(problems)} tensors the network needs "
                              f"(first: {problems[0]}); refusing a partial load")
    target.load_state_dict({**state, **{k: source[k] for k in loaded}})
    unused = [k for k in source if k not in state and not any(m in k for m in fresh_markers)]
    return TransferReport(loaded, fresh, unused, record)
