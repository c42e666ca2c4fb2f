"""The DiVA trainer: configuration, presets, the training loop, checkpoints and plots."""
