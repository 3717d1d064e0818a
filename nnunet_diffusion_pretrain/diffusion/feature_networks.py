"""Feature networks for the image-quality metrics: each maps a batch of 2D slices to
``{"pooled": (N, D), "spatial": (N, S)}``.

- ``InceptionFeatures``: the standard FID Inception-v3 (TensorFlow 2015 weights as converted by
  torch-fidelity), read from a local file; pooled = the 2048-d pool3 features, spatial = the first
  7 channels of the 17x17 ``mixed_6/conv`` map (torchvision's Mixed_6d.branch1x1), as in the
  guided-diffusion evaluator's sFID. Comparable to published numbers (up to the CT windowing).
- ``NnunetEncoderFeatures``: the pretrained denoiser's own encoder at timestep 0, no download;
  pooled = global average of the deepest stage, spatial = the first 7 channels of the middle stage
  pooled to 16x16. Tuned to the user's CT, NOT comparable to published FIDs.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.diffusion.time_conditioning import TimeConditionedUNet

SPATIAL_CHANNELS = 7


class InceptionFeatures:
    """Input: uint8 images (N, 3, H, W), resized to 299 inside the network."""

    def __init__(self, weights_file: Path, device: torch.device):
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

        if not Path(weights_file).is_file():
            raise UserFacingError(f"Inception weights not found at {weights_file}; download "
                                  f"{URL_INCEPTION_V3.rsplit('/', 1)[-1]} from {URL_INCEPTION_V3} (the FID "
                                  f"weights, converted by torch-fidelity) and pass its path with --inception-weights")
        self.network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                   feature_extractor_weights_path=str(weights_file)).to(device).eval()
        self.device = device
        self._spatial = None
        self.network.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output):
        self._spatial = output[:, :SPATIAL_CHANNELS].flatten(1).float()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.network(images.to(self.device))[0]
        return {"pooled": pooled.float().cpu(), "spatial": self._spatial.cpu()}


class NnunetEncoderFeatures:
    """Input: images in nnU-Net's normalised network space (N, channels, H, W)."""

    def __init__(self, denoiser: TimeConditionedUNet, device: torch.device):
        self.denoiser = denoiser.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.to(self.device).float()
        skips = self.denoiser.encode(x, torch.zeros(len(x), dtype=torch.long, device=self.device))
        pooled = skips[-1].mean(dim=tuple(range(2, skips[-1].ndim)))
        middle = skips[len(skips) // 2][:, :SPATIAL_CHANNELS]
        spatial = F.adaptive_avg_pool2d(middle, 16).flatten(1)
        return {"pooled": pooled.float().cpu(), "spatial": spatial.float().cpu()}
