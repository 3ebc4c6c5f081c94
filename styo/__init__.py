"""StyO: one-shot face stylisation with a latent diffusion model."""

__version__ = "0.1.0"
