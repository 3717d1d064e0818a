"""Segmentation trainers that start from a diffusion pretraining checkpoint, and the fair baseline.

    nnUNetv2_train 501 2d FOLD -tr nnUNetTrainerDiffusionFinetune -pretrained_weights CKPT
    nnUNetv2_train 501 2d FOLD -tr nnUNetTrainerDiffusionDecoderFinetune -pretrained_weights CKPT
    nnUNetv2_train 501 2d FOLD -tr nnUNetTrainerDiffusionLinearProbe -pretrained_weights CKPT
    nnUNetv2_train 501 2d FOLD -tr nnUNetTrainerBudget          (stock nnU-Net, same budget)

All four take their training budget from ``nnUNet_num_epochs``, ``nnUNet_num_iterations_per_epoch``
and ``nnUNet_num_val_iterations_per_epoch``, so a comparison gives every method the same budget.
Each transfer trainer differs from the next in one hook: which parameters are frozen when.
"""
from __future__ import annotations

import gc
import json
import os

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as stock_trainer
import torch
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from nnunet_diffusion_pretrain.checkpoint_io import EMA_WEIGHTS, RAW_WEIGHTS
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.transfer.feature_probe import DEFAULT_TIMESTEPS, DiffusionFeatureClassifier
from nnunet_diffusion_pretrain.transfer.finetune_schedules import (NNSSL_LR, EpochFactorLRScheduler, nnssl_factor,
                                                          sawtooth_decoder_epochs, sawtooth_factor)
from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings
from nnunet_diffusion_pretrain.transfer.pretrained_transfer import (ConditioningFold, load_pretrained_diffusion_weights,
                                                           transfer_timestep)
from nnunet_diffusion_pretrain.diffusion.pretraining_record import transfer_requirements
from nnunet_diffusion_pretrain.transfer.sided_labels import (KEEP_SIDES_ROTATION, KEEP_SIDES_SUFFIX, METHOD_SETTINGS_FILE,
                                                    augmentation_summary, sided_labels)
from nnunet_diffusion_pretrain.training.diffusion_pretrain_trainer import nnUNetTrainerDiffusionPretrain
from nnunet_diffusion_pretrain.training.pretrained_weights_hook import register_network, unwrap
from nnunet_diffusion_pretrain.training_budget import apply_training_budget

PROBE_TIMESTEPS_ENV = "nnUNet_probe_timesteps"
PROBE_TIMESTEPS_KEY = "diffusion_probe_timesteps"  # stored in the configuration, so inference rebuilds it


class nnUNetTrainerBudget(nnUNetTrainer):
    """Stock nnUNetTrainer whose budget comes from the environment: the baseline for comparisons."""

    keeps_sides = False  # the _keepSides variants: no mirroring, rotation within +-15 degrees

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        budget = apply_training_budget(self)
        if budget:
            self.print_to_log_file(f"Training budget from the environment: {budget}")
        sided = sided_labels(dataset_json)
        if sided and not self.keeps_sides:
            self.print_to_log_file(f"WARNING: labels {', '.join(sided)} have a side, but mirroring and rotation teach "
                                   f"this network that sides are interchangeable; train "
                                   f"{type(self).__name__}{KEEP_SIDES_SUFFIX} to keep them apart")
        self.method_settings: dict = {}

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if self.keeps_sides:
            patch_size = self.configuration_manager.patch_size
            rotation, mirror_axes = KEEP_SIDES_ROTATION, None
            initial_patch_size = get_patch_size(patch_size, rotation, rotation, rotation, (0.85, 1.25))
            if dummy_2d:
                initial_patch_size[0] = patch_size[0]
            self.inference_allowed_mirroring_axes = None
        self.method_settings["augmentation"] = augmentation_summary(rotation, mirror_axes,
                                                                    self.inference_allowed_mirroring_axes)
        self.print_to_log_file(f"Augmentation: {self.method_settings['augmentation']}")
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    def on_train_start(self):
        super().on_train_start()  # builds the data loaders, which configure the augmentation
        if self.local_rank == 0:  # a resumed run (--c) loads no weights: what its first start recorded stays
            path = os.path.join(self.output_folder, METHOD_SETTINGS_FILE)
            earlier = json.loads(open(path).read()) if os.path.isfile(path) else {}
            with open(path, "w") as f:
                json.dump({**earlier, "trainer": type(self).__name__, **self.method_settings}, f, indent=2)

    def save_checkpoint(self, filename: str) -> None:
        """Stock checkpoint, written to a temporary name and then renamed: a run killed during the
        write keeps its previous checkpoint intact for ``--c``."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)  # writes nothing (and says so)
        partial = f"{filename}.partial"
        super().save_checkpoint(partial)
        os.replace(partial, filename)


class DiffusionTransferTrainer(nnUNetTrainerBudget):
    """Shared by the transfer trainers: safe loading of ``-pretrained_weights`` with the timestep
    conditioning folded in at t*, and freezing by name that holds under DDP (``-num_gpus``).
    Not a trainer to use on its own (it is not exported to nnU-Net's trainer lookup)."""

    pretrained_weights = EMA_WEIGHTS  # which of the checkpoint's weights to start from

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.pretrained_from = None
        self._logged_frozen = None
        self._wrapped_frozen = None  # what was frozen when DDP registered its gradient hooks
        self.transfer_timestep = self.chosen_transfer_timestep()

    def chosen_transfer_timestep(self) -> int | None:
        """t*: the timestep whose conditioning folds into the network (None: the probe keeps it)."""
        return transfer_timestep()

    def frozen_prefixes(self, epoch: int) -> tuple[str, ...]:
        """Names of the parameters that do not train in this epoch."""
        return ()

    def transfer_target(self) -> tuple[nn.Module, tuple[str, ...], str]:
        """(module to load into, key markers that start fresh, key prefix of the denoiser in it)."""
        return unwrap(self.network), (".seg_layers.",), ""

    def initialize(self):
        super().initialize()
        register_network(self.network, self)

    def configure_optimizers(self):
        # nnU-Net calls this just before it wraps the network in DDP, which registers gradient hooks
        # only for the parameters that train at that moment: freeze first
        self.apply_freezing(0)
        self._wrapped_frozen = self.frozen_prefixes(0)
        return self.optimizer_and_schedule()

    def optimizer_and_schedule(self):
        return super().configure_optimizers()

    def load_pretrained(self, checkpoint_file: str) -> None:
        target, fresh, prefix = self.transfer_target()
        expected = transfer_requirements(self.plans_manager, self.configuration_name, self.num_input_channels)
        fold = None
        if self.transfer_timestep is not None:
            channels = self.num_input_channels
            denoiser = nnUNetTrainerDiffusionPretrain.build_network_architecture(
                self.plans_manager, self.configuration_manager, channels, channels)
            fold = ConditioningFold(denoiser, self.transfer_timestep)
        report = load_pretrained_diffusion_weights(target, checkpoint_file, expected, fresh, prefix,
                                                   self.pretrained_weights, fold)
        self.pretrained_from = checkpoint_file
        self.method_settings["transfer_timestep"] = self.transfer_timestep
        self.print_to_log_file(f"Pretrained weights from {checkpoint_file} ('{self.pretrained_weights}' of "
                               f"{report.record['dataset_name']}, {report.record['plans_name']}):\n"
                               f"{report.summary()}")
        self.after_pretrained_load(report.record)

    def after_pretrained_load(self, record: dict) -> None:
        pass

    def apply_freezing(self, epoch: int) -> None:
        frozen = self.frozen_prefixes(epoch)
        for name, parameter in unwrap(self.network).named_parameters():
            parameter.requires_grad_(not name.startswith(frozen))
        if self.is_ddp and self._wrapped_frozen is not None and frozen != self._wrapped_frozen:
            self._rewrap_ddp()
            self._wrapped_frozen = frozen

    def _rewrap_ddp(self) -> None:
        """A new DDP wrapper registers hooks for the parameters that train now; the old one, with
        its hooks, is released first (every rank does this at the same epoch)."""
        module = self.network.module
        self.network = None
        gc.collect()
        self.network = stock_trainer.DDP(module, device_ids=[self.local_rank])

    def on_train_start(self):
        if self.current_epoch == 0 and self.pretrained_from is None:
            raise UserFacingError(f"{self.__class__.__name__} fine-tunes a diffusion pretraining checkpoint: pass "
                                  f"-pretrained_weights .../nnUNetTrainerDiffusionPretrain__.../checkpoint_final.pth "
                                  f"(or use nnUNetTrainerBudget to train from scratch)")
        super().on_train_start()

    def on_train_epoch_start(self):
        frozen = self.frozen_prefixes(self.current_epoch)
        self.apply_freezing(self.current_epoch)
        if frozen != self._logged_frozen:
            self.print_to_log_file(f"Frozen from epoch {self.current_epoch}: "
                                   f"{', '.join(p + '*' for p in frozen) if frozen else 'nothing'}")
            self._logged_frozen = frozen
        super().on_train_epoch_start()


class nnUNetTrainerDiffusionFinetune(DiffusionTransferTrainer):
    """Every pretrained weight (encoder and decoder), fresh heads. First the decoder and heads train
    alone (the first 10% of epochs, at least one; encoder frozen), then the whole network, the
    pretrained encoder at 0.1x the learning rate nnU-Net uses from scratch (decoder and heads at 1x)."""

    encoder_lr_scale = 0.1

    @property
    def warmup_epochs(self) -> int:
        return max(1, round(0.1 * self.num_epochs))

    def frozen_prefixes(self, epoch: int) -> tuple[str, ...]:
        return ("encoder.",) if epoch < self.warmup_epochs else ()

    def optimizer_and_schedule(self):
        named = list(unwrap(self.network).named_parameters())
        groups = [{"params": [p for n, p in named if not n.startswith("encoder.")], "lr_scale": 1.0},
                  {"params": [p for n, p in named if n.startswith("encoder.")], "lr_scale": self.encoder_lr_scale}]
        optimizer = torch.optim.SGD(groups, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                    nesterov=True)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()  # nnU-Net's poly schedule sets one rate for all groups (and logs group 0)
        for group in self.optimizer.param_groups:
            group["lr"] *= group["lr_scale"]


class nnUNetTrainerDiffusionFinetune_encoderLR1(nnUNetTrainerDiffusionFinetune):
    """After the decoder warm-up, the pretrained encoder trains at nnU-Net's full learning rate: a
    setting to compare on a validation fold where 0.1x seems to under-fit (on the CT subset at one
    labelled volume it did worse: benchmarks/results/budget_calibration/btcv6_cpu1600_train1)."""

    encoder_lr_scale = 1.0


class nnUNetTrainerDiffusionFinetune_noWarmup(nnUNetTrainerDiffusionFinetune):
    """No decoder-only warm-up: the whole network trains from the first epoch (encoder at 0.1x), to
    measure on a validation fold what the warm-up is worth."""

    @property
    def warmup_epochs(self) -> int:
        return 0


class nnUNetTrainerDiffusionFinetune_noEMA(nnUNetTrainerDiffusionFinetune):
    """Starts from the pretraining's raw optimiser weights instead of their EMA (the default), to
    measure on a validation fold what the EMA is worth to segmentation."""

    pretrained_weights = RAW_WEIGHTS


class nnUNetTrainerDiffusionFinetune_nnssl(DiffusionTransferTrainer):
    """nnssl's fine-tuning recipe (``PretrainedTrainer`` of stock nnU-Net): the whole network from
    the first epoch, SGD with Nesterov momentum 0.99 at lr 1e-3, linear warm-up over the first 5%
    of epochs, then poly decay (``finetune_schedules``). nnU-Net's batch size and deep supervision
    are kept, so only the recipe differs from the other arms."""

    schedule = staticmethod(nnssl_factor)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = NNSSL_LR

    def optimizer_and_schedule(self):
        optimizer = torch.optim.SGD(unwrap(self.network).parameters(), self.initial_lr,
                                    weight_decay=self.weight_decay, momentum=0.99, nesterov=True)
        return optimizer, EpochFactorLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.schedule)


class nnUNetTrainerDiffusionFinetune_sawtooth(nnUNetTrainerDiffusionFinetune_nnssl):
    """nnssl's "sawtooth" recipe: the decoder and heads alone warm up and decay to zero (the first
    5% of epochs, encoder frozen), then the whole network warms up over 5% and decays, with fresh
    optimiser momentum for that phase, as nnssl starts a new optimiser there."""

    schedule = staticmethod(sawtooth_factor)

    def frozen_prefixes(self, epoch: int) -> tuple[str, ...]:
        return ("encoder.",) if epoch < sawtooth_decoder_epochs(self.num_epochs) else ()

    def on_train_epoch_start(self):
        if self.current_epoch == sawtooth_decoder_epochs(self.num_epochs):
            self.optimizer.state.clear()
        super().on_train_epoch_start()


class nnUNetTrainerDiffusionDecoderFinetune(DiffusionTransferTrainer):
    """The paper's "fine-tuning decoder": the pretrained encoder stays frozen, decoder and heads train."""

    def frozen_prefixes(self, epoch: int) -> tuple[str, ...]:
        return ("encoder.",)


class nnUNetTrainerDiffusionLinearProbe(DiffusionTransferTrainer):
    """The paper's "linear classification": the whole denoiser stays frozen; a pixel classifier on
    its multi-scale decoder features at fixed timesteps (default 50, 150, 250; set others with
    ``nnUNet_probe_timesteps=25,100``) is all that trains. Inference costs one denoiser pass per
    timestep and predicts through stock ``nnUNetv2_predict``."""

    fixed_timesteps: tuple[int, ...] | None = None  # a variant's own timesteps; None: environment or default

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # stored in the plans the trainer writes to its output folder, so prediction rebuilds the same probe
        plans["configurations"][configuration][PROBE_TIMESTEPS_KEY] = self.probe_timesteps()
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    @classmethod
    def probe_timesteps(cls) -> list[int]:
        """The variant's timesteps, else ``nnUNet_probe_timesteps``, else the default; a variant
        refuses the variable rather than training under a name that says other timesteps."""
        timesteps = os.environ.get(PROBE_TIMESTEPS_ENV)
        if cls.fixed_timesteps is not None:
            if timesteps:
                raise UserFacingError(f"{cls.__name__} probes timesteps {list(cls.fixed_timesteps)}; unset "
                                      f"{PROBE_TIMESTEPS_ENV} or train nnUNetTrainerDiffusionLinearProbe with it")
            return list(cls.fixed_timesteps)
        if not timesteps:
            return list(DEFAULT_TIMESTEPS)
        try:
            values = [int(t) for t in timesteps.split(",")]
        except ValueError:
            values = []
        if not values or not all(0 <= t < DiffusionSettings().num_train_timesteps for t in values):
            raise UserFacingError(f"{PROBE_TIMESTEPS_ENV} must be comma-separated timesteps in [0, 1000), "
                                  f"got {timesteps!r}")
        return values

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        denoiser = nnUNetTrainerDiffusionPretrain.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_input_channels)
        timesteps = configuration_manager.configuration.get(PROBE_TIMESTEPS_KEY, list(DEFAULT_TIMESTEPS))
        return DiffusionFeatureClassifier(denoiser, num_output_channels, DiffusionSettings(), timesteps)

    def transfer_target(self) -> tuple[nn.Module, tuple[str, ...], str]:
        return unwrap(self.network), (), "denoiser."

    def chosen_transfer_timestep(self) -> int | None:
        return None  # the probe runs the conditioned denoiser itself, at its probe timesteps

    def after_pretrained_load(self, record: dict) -> None:
        unwrap(self.network).use_schedule(DiffusionSettings.from_record(record))

    def frozen_prefixes(self, epoch: int) -> tuple[str, ...]:
        return ("denoiser.",)

    def set_deep_supervision_enabled(self, enabled: bool):
        """The classifier has one output; there is nothing to switch."""

    def on_train_start(self):
        super().on_train_start()
        timesteps = unwrap(self.network).timesteps.tolist()
        self.print_to_log_file(f"Linear probe on timesteps {timesteps}: {len(timesteps)} frozen denoiser passes "
                               f"per forward; trainable parameters: "
                               f"{sum(p.numel() for p in self.network.parameters() if p.requires_grad)}")


class nnUNetTrainerDiffusionLinearProbe_t5_25_50(nnUNetTrainerDiffusionLinearProbe):
    """The linear probe on low-noise features (timesteps 5, 25, 50): one side of the timestep
    comparison on a validation fold."""

    fixed_timesteps = (5, 25, 50)


class nnUNetTrainerDiffusionLinearProbe_t250_500_750(nnUNetTrainerDiffusionLinearProbe):
    """The linear probe on high-noise features (timesteps 250, 500, 750): the other side of the
    timestep comparison on a validation fold."""

    fixed_timesteps = (250, 500, 750)


class nnUNetTrainerBudget_keepSides(nnUNetTrainerBudget):
    """Stock nnU-Net (same budget) for labels with a side: no mirroring in training or at
    inference, in-plane rotation within +-15 degrees (``sided_labels``)."""

    keeps_sides = True


class nnUNetTrainerDiffusionFinetune_keepSides(nnUNetTrainerDiffusionFinetune):
    """``nnUNetTrainerDiffusionFinetune`` for labels with a side (augmentation as ``nnUNetTrainerBudget_keepSides``)."""

    keeps_sides = True


class nnUNetTrainerDiffusionFinetune_nnssl_keepSides(nnUNetTrainerDiffusionFinetune_nnssl):
    """``nnUNetTrainerDiffusionFinetune_nnssl`` for labels with a side."""

    keeps_sides = True


class nnUNetTrainerDiffusionFinetune_sawtooth_keepSides(nnUNetTrainerDiffusionFinetune_sawtooth):
    """``nnUNetTrainerDiffusionFinetune_sawtooth`` for labels with a side."""

    keeps_sides = True


class nnUNetTrainerDiffusionDecoderFinetune_keepSides(nnUNetTrainerDiffusionDecoderFinetune):
    """``nnUNetTrainerDiffusionDecoderFinetune`` for labels with a side."""

    keeps_sides = True


class nnUNetTrainerDiffusionLinearProbe_keepSides(nnUNetTrainerDiffusionLinearProbe):
    """``nnUNetTrainerDiffusionLinearProbe`` for labels with a side."""

    keeps_sides = True
