from types import SimpleNamespace

import pytest

from nnunet_diffusion_pretrain.training_budget import apply_training_budget, positive_int_from_env


def test_budget_overrides_only_what_is_set(monkeypatch):
    trainer = SimpleNamespace(num_epochs=1000, num_iterations_per_epoch=250, num_val_iterations_per_epoch=50,
                              save_every=50)
    monkeypatch.setenv("nnUNet_num_epochs", "7")
    monkeypatch.setenv("nnUNet_num_iterations_per_epoch", "3")
    monkeypatch.delenv("nnUNet_num_val_iterations_per_epoch", raising=False)
    monkeypatch.delenv("nnUNet_save_every", raising=False)
    assert apply_training_budget(trainer) == {"num_epochs": 7, "num_iterations_per_epoch": 3}
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (7, 3, 50)


@pytest.mark.parametrize("bad", ["0", "-3", "ten", "1.5"])
def test_invalid_budget_is_refused(monkeypatch, bad):
    monkeypatch.setenv("nnUNet_num_epochs", bad)
    with pytest.raises(ValueError, match="nnUNet_num_epochs"):
        positive_int_from_env("nnUNet_num_epochs", 5)
