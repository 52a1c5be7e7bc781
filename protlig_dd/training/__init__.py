"""protlig_dd.training."""
