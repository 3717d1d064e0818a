"""Stage 2, diffusion pretraining: timestep conditioning of the planned network, the noise process,
EMA, the pretraining data and schedule, the checkpoint record, and what a pretrained denoiser
does (sampling, image-quality metrics, synthetic cases, the pool preview)."""
