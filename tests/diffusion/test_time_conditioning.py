"""The denoiser is nnU-Net's planned network plus separate conditioning modules, and its conditioning
at one timestep folds exactly into a plain U-Net."""
from __future__ import annotations

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_diffusion_pretrain.training import nnUNetTrainerDiffusionPretrain

PLANS = ["nnUNetPlans", "nnUNetResEncUNetMPlans"]
CONFIGURATIONS = ["2d", "3d_fullres"]


def build_pair(preprocessed, plans: str, configuration: str):
    torch.manual_seed(0)  # the same initial weights in every run
    pm = PlansManager(str(preprocessed / f"{plans}.json"))
    cm = pm.get_configuration(configuration)
    segmentation = nnUNetTrainer.build_network_architecture(pm, cm, 1, 5, enable_deep_supervision=True)
    denoiser = nnUNetTrainerDiffusionPretrain.build_network_architecture(pm, cm, 1, 5)
    return pm, cm, segmentation, denoiser


@pytest.mark.parametrize("plans", PLANS)
@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_every_segmentation_parameter_exists_unchanged_in_denoiser(planned_phantom, plans, configuration, tmp_path):
    _, cm, segmentation, denoiser = build_pair(planned_phantom["preprocessed"], plans, configuration)
    expected_class = cm.network_arch_class_name.split(".")[-1]
    assert type(segmentation).__name__ == expected_class
    seg_state, den_state = segmentation.state_dict(), denoiser.state_dict()
    transferable = [k for k in seg_state if ".seg_layers." not in k]
    assert len(transferable) > 20
    for key in transferable:
        assert key in den_state, f"{key} missing from the denoiser"
        assert den_state[key].shape == seg_state[key].shape, key
    extra = {k.split(".")[0] for k in den_state if k not in seg_state}
    assert extra == {"time_embedding", "film", "decoder"} or extra == {"time_embedding", "film"}
    assert all(".seg_layers." in k for k in den_state if k not in seg_state and k.startswith("decoder"))
    # nnU-Net's own -pretrained_weights loader accepts the denoiser's weights 1:1
    torch.save({"network_weights": den_state}, tmp_path / "w.pth")
    load_pretrained_weights(segmentation, str(tmp_path / "w.pth"), verbose=False)
    for key in transferable:
        assert torch.equal(segmentation.state_dict()[key], den_state[key])


def test_untrained_denoiser_equals_plain_unet_and_conditioning_acts(planned_phantom):
    pm, cm, _, denoiser = build_pair(planned_phantom["preprocessed"], "nnUNetPlans", "2d")
    plain = nnUNetTrainer.build_network_architecture(pm, cm, 1, 1, enable_deep_supervision=False)
    plain.load_state_dict({k: v for k, v in denoiser.state_dict().items() if k in plain.state_dict()},
                          strict=False)
    plain.decoder.seg_layers[-1].load_state_dict(denoiser.decoder.seg_layers[-1].state_dict())
    x = torch.randn(2, 1, *cm.patch_size)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        out = denoiser(x, t)
        assert out.shape == x.shape
        assert torch.allclose(out, plain(x), atol=1e-5), "zero-initialised FiLM must be the identity"
        torch.nn.init.normal_(denoiser.film.weight, std=0.1)
        same_x = x[:1].repeat(2, 1, 1, 1)
        out_t = denoiser(same_x, t)
        assert not torch.allclose(out_t[0], out_t[1], atol=1e-4), "output must depend on the timestep"


def test_gradients_reach_conditioning_and_backbone(planned_phantom):
    _, cm, _, denoiser = build_pair(planned_phantom["preprocessed"], "nnUNetPlans", "2d")
    x = torch.randn(2, 1, *cm.patch_size)
    denoiser(x, torch.tensor([1, 500])).square().mean().backward()
    assert denoiser.film.weight.grad.abs().sum() > 0
    assert denoiser.time_embedding[1].linear_1.weight.grad is not None
    assert denoiser.encoder.stages[0][0].convs[0].conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("plans", PLANS)
@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_folded_unet_computes_the_denoisers_decoder_features_at_that_timestep(planned_phantom, plans, configuration):
    pm, cm, segmentation, denoiser = build_pair(planned_phantom["preprocessed"], plans, configuration)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # trained-looking conditioning and norms, not the zero/identity initialisation
        for name, parameter in denoiser.named_parameters():
            if name.startswith(("film.", "time_embedding.")) or name.endswith(("norm.weight", "norm.bias")):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05
                                + (1.0 if name.endswith("norm.weight") else 0.0))
    t_star = 137
    segmentation.load_state_dict({**segmentation.state_dict(), **{
        k: v for k, v in denoiser.folded_state_dict(t_star).items() if ".seg_layers." not in k}})
    features = {}
    for key, network in (("denoiser", denoiser), ("segmentation", segmentation)):
        network.decoder.stages[-1].register_forward_hook(lambda m, i, o, key=key: features.__setitem__(key, o))
    x = torch.randn(2, 1, *cm.patch_size, generator=generator)
    denoiser.eval(), segmentation.eval()
    with torch.no_grad():
        denoiser(x, torch.full((2,), t_star))
        segmentation(x)
        # equal up to float32 rounding through the folded norms (seen up to 1.1e-5 on features of ~0.3)
        assert torch.allclose(features["segmentation"], features["denoiser"], rtol=1e-4, atol=1e-4), \
            (features["segmentation"] - features["denoiser"]).abs().max()
        denoiser(x, torch.full((2,), t_star + 300))
        assert not torch.allclose(features["segmentation"], features["denoiser"], atol=1e-3), \
            "another timestep must give other features"
