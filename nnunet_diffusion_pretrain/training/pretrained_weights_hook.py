"""Route nnU-Net's ``-pretrained_weights`` through our safe loader.

``nnUNetv2_train -pretrained_weights FILE`` calls ``nnunetv2.run.run_training.load_pretrained_weights``,
which unpickles the file with ``weights_only=False`` (it can execute code from the file) and without
``map_location`` (a GPU-written file fails on a CPU-only machine). nnU-Net offers no hook for this,
so importing our trainers replaces that one function in processes that use them. Networks of our
transfer trainers are loaded by their trainer (record check, verbose report); any other network
gets the same safe, strict load without the record's plan check.
"""
from __future__ import annotations

import weakref

import nnunetv2.run.run_training as run_training
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely
from nnunet_diffusion_pretrain.errors import UserFacingError

_OWNERS: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()


def register_network(network: nn.Module, trainer) -> None:
    """``trainer.load_pretrained(file)`` will handle ``-pretrained_weights`` for this network."""
    _OWNERS[network] = trainer


def unwrap(network: nn.Module) -> nn.Module:
    module = network.module if isinstance(network, DDP) else network
    return module._orig_mod if isinstance(module, OptimizedModule) else module


def load_pretrained_weights_safely(network: nn.Module, fname: str, verbose: bool = False) -> None:
    owner = _OWNERS.get(network)
    if owner is not None:
        owner.load_pretrained(fname)
        return
    target = unwrap(network)
    weights = load_checkpoint_safely(fname, map_location="cpu")["network_weights"]
    state = target.state_dict()
    needed = [k for k in state if ".seg_layers." not in k]
    missing = [k for k in needed if k not in weights or weights[k].shape != state[k].shape]
    if missing:
        raise UserFacingError(f"{fname} does not fit this network ({len(missing)} tensors missing or "
                              f"mis-shaped, first: {missing[0]})")
    target.load_state_dict({**state, **{k: weights[k] for k in needed}})


def install() -> None:
    run_training.load_pretrained_weights = load_pretrained_weights_safely
