"""Prediction: the single-step pipeline, its memory plan, VAE tiling and image checks."""
