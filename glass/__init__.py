"""GLASS: guided latent slot diffusion pipeline."""

__version__ = "0.1.0"
