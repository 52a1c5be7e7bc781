"""protlig_dd: Score Entropy Discrete Diffusion (SEDD) for protein sequences."""

__version__ = "0.1.0"
