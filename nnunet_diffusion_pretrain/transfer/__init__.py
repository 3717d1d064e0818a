"""Stage 3, transfer to segmentation with few labels: loading pretrained weights (the conditioning
folded at t*), the linear probe, low-label splits and sparse slices, labels with a side, and the
fine-tuning recipes' schedules."""
