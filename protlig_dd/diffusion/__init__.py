"""protlig_dd.diffusion."""
