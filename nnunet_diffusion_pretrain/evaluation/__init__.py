"""Stage 4, evaluation: the label-efficiency benchmark behind ``nnUNetv2_diffusion_benchmark``
(plans, presets, budget calibration, runs, metrics, report)."""
