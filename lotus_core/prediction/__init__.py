"""Prediction: the single-step pipeline, its memory plan, VAE tiling, progress and Cancel."""
