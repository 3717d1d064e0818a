"""``nnUNetTrainerDiffusionPretrain``: DDPM pretraining of the network nnU-Net planned.

Usage: ``nnUNetv2_train DATASET CONFIGURATION FOLD -tr nnUNetTrainerDiffusionPretrain``.
The fold picks the labelled cases whose images join the unlabeled pool (``all``: every labelled
case; ``k``: the training cases of split k, whose validation cases are held out). The diffusion
logic lives in plain modules; this class only wires it into nnU-Net's hooks.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from time import time
from typing import List

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from torch import autocast, distributed as dist, nn
from torch._dynamo import OptimizedModule

from nnunet_diffusion_pretrain.checkpoint_io import (EMA_WEIGHTS, RAW_WEIGHTS, load_checkpoint_safely,
                                                     save_checkpoint_atomically)
from nnunet_diffusion_pretrain.diffusion.ema_weights import ema_state_dict, ema_weights_applied, make_ema
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.diffusion.input_range import unit_range_mapping
from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings, denoising_loss
from nnunet_diffusion_pretrain.planned_dataset import PlannedDataset
from nnunet_diffusion_pretrain.diffusion.pretraining_data import (NO_LABELS, ROTATION, PretrainingImages, center_patches,
                                                        dummy_2d_augmentation, generative_training_transforms,
                                                        split_pool)
from nnunet_diffusion_pretrain.diffusion.pretraining_record import (RECORD_KEY, check_format_version, pretraining_record,
                                                          record_mismatches)
from nnunet_diffusion_pretrain.diffusion.pretraining_schedule import (WarmupConstantLRScheduler, kept_checkpoint_name,
                                                            kept_iterations, warmup_epochs)
from nnunet_diffusion_pretrain.diffusion.sampling import sample_images, write_sample_grid
from nnunet_diffusion_pretrain.diffusion.time_conditioning import TimeConditionedUNet, build_denoiser
from nnunet_diffusion_pretrain.training_budget import apply_training_budget, positive_int_from_env
from nnunet_diffusion_pretrain.pool.unlabeled_pool import PoolManifest

MID_T_LOSS_KEY = "val_losses_mid_t"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stops without writing a checkpoint."""


class nnUNetTrainerDiffusionPretrain(nnUNetTrainer):
    diffusion_settings = DiffusionSettings()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 2e-4
        self.weight_decay = 0.0
        self.enable_deep_supervision = False
        self.oversample_foreground_percent = 0.0  # no labels: patches are drawn uniformly
        self.label_manager = NO_LABELS
        self.noise_scheduler = self.diffusion_settings.ddpm_scheduler()
        self.ema = None
        self.best_heldout_loss = None
        self._iteration = 0
        self.logger.local_logger.my_fantastic_logging[MID_T_LOSS_KEY] = []
        # end-of-training sample grid; both settable for quick runs
        self.num_samples = positive_int_from_env("nnUNet_diffusion_num_samples",
                                                 16 if len(self.configuration_manager.patch_size) == 2 else 4)
        self.num_sampling_steps = positive_int_from_env("nnUNet_diffusion_sampling_steps", 50)
        budget = apply_training_budget(self)
        if budget:
            self.print_to_log_file(f"Training budget from the environment: {budget}")
        self.keep_iterations = kept_iterations(self.num_iterations_per_epoch)

    # ---- network -------------------------------------------------------------------------------
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        """The planned U-Net, predicting one value per input channel, plus timestep conditioning."""
        return build_denoiser(plans_manager, configuration_manager, num_input_channels)

    def denoiser(self) -> TimeConditionedUNet:
        """The network without DDP and torch.compile wrappers."""
        module = self.network.module if self.is_ddp else self.network
        return module._orig_mod if isinstance(module, OptimizedModule) else module

    def initialize(self):
        super().initialize()
        self.ema = make_ema(self.denoiser())

    def configure_optimizers(self):
        """AdamW; linear warm-up, then a constant rate (``pretraining_schedule``)."""
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        epochs = warmup_epochs(self.num_iterations_per_epoch)
        self.print_to_log_file(f"Learning rate: linear warm-up over {epochs} epochs, then constant {self.initial_lr}")
        return optimizer, WarmupConstantLRScheduler(optimizer, self.initial_lr, epochs)

    def _build_loss(self):
        return None  # the loss is noise_schedule.denoising_loss

    def record(self) -> dict:
        return pretraining_record(self.plans_manager, self.configuration_name, self.num_input_channels,
                                  self.diffusion_settings, self.denoiser().film.in_features)

    # ---- data ----------------------------------------------------------------------------------
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """Patches are cut at their final size and rotated at most 15 degrees (border replicated),
        so no padding at stock nnU-Net's value 0 (mid-grey after CT normalisation) enters a corner;
        cases smaller than the patch come padded with their background (``PretrainingImages``)."""
        _, _, _, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        patch_size = list(self.configuration_manager.patch_size)
        return ROTATION, dummy_2d_augmentation(patch_size), patch_size, mirror_axes

    @staticmethod
    def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, **kwargs):
        return generative_training_transforms(patch_size, rotation_for_DA, do_dummy_2d_data_aug)

    @staticmethod
    def get_validation_transforms(deep_supervision_scales, **kwargs):
        return None

    def get_tr_and_val_datasets(self):
        tr_keys, val_keys = self.do_split()
        planned = PlannedDataset(self.plans_manager.dataset_name, self.plans_manager.plans, self.dataset_json,
                                 self.configuration_name, Path(self.preprocessed_dataset_folder_base))
        pool = PoolManifest.open(planned, create=False)
        pool_train, pool_held_out = split_pool(sorted(pool.cases))

        def labelled(keys):
            return self.dataset_class(self.preprocessed_dataset_folder, list(keys)) if keys else None

        labelled_val = [] if self.fold == "all" else val_keys
        patch_size = self.configuration_manager.patch_size
        dataset_tr = PretrainingImages(labelled(tr_keys), pool, pool_train, patch_size)
        dataset_val = PretrainingImages(labelled(labelled_val), pool, pool_held_out, patch_size)
        if len(dataset_val) == 0:
            self.print_to_log_file("WARNING: no held-out images (add at least two unlabeled scans to the pool); "
                                   "the 'held-out' loss is measured on training images")
            dataset_val = dataset_tr
        self.print_to_log_file(f"Pretraining images: {len(tr_keys)} labelled cases (labels unused) + "
                               f"{len(pool_train)} pool cases from {pool.folder}; held out: "
                               f"{len(labelled_val)} labelled + {len(pool_held_out)} pool cases")
        return dataset_tr, dataset_val

    # ---- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._iteration = 0

    def train_step(self, batch: dict) -> dict:
        x0 = self.diffusion_settings.to_diffusion_space(batch["data"].to(self.device, non_blocking=True))
        timesteps = torch.randint(0, self.diffusion_settings.num_train_timesteps, (x0.shape[0],), device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = denoising_loss(self.network, self.noise_scheduler, x0, timesteps)
        self._iteration += 1
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
            self.optimizer.step()
        self.ema.step(self.denoiser().parameters())
        # checked here, where stock nnU-Net synchronises anyway: an earlier check would stall the GPU.
        # The weights in memory may be spoilt by now, but nothing is saved after this point.
        loss = loss.detach().cpu()
        if not torch.isfinite(loss):
            self._stop_on_non_finite_loss()
        return {"loss": loss.numpy()}

    def _stop_on_non_finite_loss(self):
        kept = [f for f in ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth")
                if os.path.isfile(join(self.output_folder, f))]
        message = (f"Training stopped: the denoising loss became NaN/inf at epoch {self.current_epoch}, iteration "
                   f"{self._iteration}. No checkpoint was written after that; the last good ones are kept: "
                   f"{', '.join(kept) if kept else 'none yet'} in {self.output_folder}. Lower initial_lr or check "
                   f"the pool for corrupt cases, then resume with --c.")
        self.print_to_log_file(message)
        raise NonFiniteLossError(message)

    # ---- held-out denoising loss (EMA weights) -------------------------------------------------
    def on_validation_epoch_start(self):
        self.network.eval()
        self.ema.store(self.denoiser().parameters())
        self.ema.copy_to(self.denoiser().parameters())
        # the same timesteps and noise every epoch, so epochs are comparable
        self._validation_generator = torch.Generator().manual_seed(12345 + self.local_rank)

    def validation_step(self, batch: dict) -> dict:
        x0 = self.diffusion_settings.to_diffusion_space(batch["data"].to(self.device, non_blocking=True))
        n, g, T = x0.shape[0], self._validation_generator, self.diffusion_settings.num_train_timesteps
        timesteps = torch.randint(0, T, (n,), generator=g).to(self.device)
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        mid = torch.full((n,), T // 2, device=self.device, dtype=torch.long)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = denoising_loss(self.network, self.noise_scheduler, x0, timesteps, noise)
            loss_mid = denoising_loss(self.network, self.noise_scheduler, x0, mid, noise)
        return {"loss": loss.detach().cpu().numpy(), "loss_mid_t": loss_mid.detach().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        self.ema.restore(self.denoiser().parameters())
        outputs = collate_outputs(val_outputs)
        losses = {"loss": outputs["loss"], "loss_mid_t": outputs["loss_mid_t"]}
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, losses)
            losses = {k: np.concatenate([np.atleast_1d(g[k]) for g in gathered]) for k in losses}
        self.logger.log("val_losses", float(np.mean(losses["loss"])), self.current_epoch)
        self.logger.log(MID_T_LOSS_KEY, float(np.mean(losses["loss_mid_t"])), self.current_epoch)
        # the stock logger and progress plot expect these keys every epoch; there is no segmentation
        self.logger.log("mean_fg_dice", float("nan"), self.current_epoch)
        self.logger.log("dice_per_class_or_region", [], self.current_epoch)

    def on_epoch_end(self):
        """Stock bookkeeping, with 'best' meaning the lowest held-out denoising loss."""
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        value = lambda key: self.logger.get_value(key, step=-1)  # noqa: E731
        self.print_to_log_file("train_loss", np.round(value("train_losses"), 4))
        self.print_to_log_file("held-out denoising loss", np.round(value("val_losses"), 4),
                               f"(at t={self.diffusion_settings.num_train_timesteps // 2}:",
                               f"{np.round(value(MID_T_LOSS_KEY), 4)})")
        self.print_to_log_file(f"Epoch time: {np.round(value('epoch_end_timestamps') - value('epoch_start_timestamps'), 2)} s")
        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != self.num_epochs - 1:
            self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
        iterations = (self.current_epoch + 1) * self.num_iterations_per_epoch
        if iterations in self.keep_iterations:
            self.save_checkpoint(join(self.output_folder, kept_checkpoint_name(iterations)))
            self.print_to_log_file(f"Kept the checkpoint after {iterations} iterations: {kept_checkpoint_name(iterations)}")
        if self.best_heldout_loss is None or value("val_losses") < self.best_heldout_loss:
            self.best_heldout_loss = value("val_losses")
            self.print_to_log_file(f"New best held-out denoising loss: {np.round(self.best_heldout_loss, 4)}")
            self.save_checkpoint(join(self.output_folder, "checkpoint_best.pth"))
        if self.local_rank == 0:
            self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, with the EMA weights as ``network_weights`` (what later stages and
        ``-pretrained_weights`` load), the raw weights and EMA state for ``--c``, and a record."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        denoiser = self.denoiser()
        save_checkpoint_atomically({
            EMA_WEIGHTS: ema_state_dict(denoiser, self.ema),
            RAW_WEIGHTS: denoiser.state_dict(),
            "ema_state": self.ema.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": None,
            "best_heldout_loss": self.best_heldout_loss,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            RECORD_KEY: self.record(),
        }, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not self.was_initialized:
            self.initialize()
        checkpoint = load_checkpoint_safely(filename_or_checkpoint, map_location=self.device)
        stored = checkpoint.get(RECORD_KEY, {})
        check_format_version(stored, filename_or_checkpoint)
        # records written before 0.7.0 lack the input map: theirs was the identity, the default
        mismatches = record_mismatches({**stored, **DiffusionSettings.from_record(stored).to_dict()}, self.record())
        if mismatches:
            raise UserFacingError(f"{filename_or_checkpoint} does not belong to this training: "
                                  + "; ".join(mismatches))
        self.denoiser().load_state_dict(checkpoint[RAW_WEIGHTS])
        self.ema.load_state_dict(checkpoint["ema_state"])
        self.ema.to(self.device)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self.best_heldout_loss = checkpoint["best_heldout_loss"]
        self.inference_allowed_mirroring_axes = checkpoint["inference_allowed_mirroring_axes"]

    # ---- end of training: samples instead of segmentation validation ---------------------------
    def perform_actual_validation(self, save_probabilities: bool = False):
        """Write a grid of DDIM samples (EMA weights) next to real held-out patches (rank 0 only;
        the sampler uses no collective operations, so other ranks cannot deadlock on it)."""
        if self.local_rank != 0:
            return
        patch_size = list(self.configuration_manager.patch_size)
        n = self.num_samples
        denoiser = self.denoiser()
        self.print_to_log_file(f"Sampling {n} images with DDIM ({self.num_sampling_steps} steps, EMA weights)")
        with ema_weights_applied(denoiser, self.ema):
            samples = sample_images(denoiser, self.diffusion_settings, (n, self.num_input_channels, *patch_size),
                                    self.device, "ddim", num_steps=self.num_sampling_steps, batch_size=self.batch_size)
        _, held_out = self.get_tr_and_val_datasets()
        real = center_patches(held_out, patch_size, n)
        written = write_sample_grid(samples.numpy(), Path(self.output_folder) / "samples",
                                    list(self.configuration_manager.spacing), real_patches=real,
                                    title=f"{self.plans_manager.dataset_name} {self.configuration_name}, "
                                          f"epoch {self.current_epoch}")
        self.print_to_log_file(f"Samples written to {written[-1].parent}")


class nnUNetTrainerDiffusionPretrain_poly(nnUNetTrainerDiffusionPretrain):
    """nnU-Net's poly decay to zero at the planned epoch count instead of warm-up + constant: its
    intermediate checkpoints are not those of shorter runs, and ``--c`` cannot extend it."""

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class nnUNetTrainerDiffusionPretrain_cosine(nnUNetTrainerDiffusionPretrain):
    diffusion_settings = DiffusionSettings(beta_schedule="cosine")


class nnUNetTrainerDiffusionPretrain_vpred(nnUNetTrainerDiffusionPretrain):
    diffusion_settings = DiffusionSettings(prediction_type="v_prediction")


class nnUNetTrainerDiffusionPretrain_cosine_vpred(nnUNetTrainerDiffusionPretrain):
    diffusion_settings = DiffusionSettings(beta_schedule="cosine", prediction_type="v_prediction")


class nnUNetTrainerDiffusionPretrain_unitRange(nnUNetTrainerDiffusionPretrain):
    """Noises CT images mapped from nnU-Net's clipped range (about [-4, 3] z-scores) to [-1, 1],
    the range DDPM's schedule assumes (``input_range``). The checkpoint records the map, so the
    linear probe and the sampler apply it too; fine-tuning needs none, as the first convolution's
    instance normalisation removes an affine change of its input. Sampling clips each step's
    predicted clean image to [-1, 1], as diffusers' ``clip_sample`` does."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.diffusion_settings = replace(self.diffusion_settings,
                                          **unit_range_mapping(self.plans_manager, self.configuration_manager),
                                          clip_sample=True)
        self.print_to_log_file(f"Images are noised as x * {self.diffusion_settings.input_scale:.4f} + "
                               f"{self.diffusion_settings.input_shift:.4f} (nnU-Net's clipped range -> [-1, 1])")
