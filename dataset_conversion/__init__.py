"""Converters from public abdominal CT collections (as their providers ship them) to nnU-Net raw
datasets and unlabeled pools; one module and one ``nnUNetv2_convert_*`` command per collection.
Installed as ``nnunet_diffusion_pretrain.dataset_conversion``."""
