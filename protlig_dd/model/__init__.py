"""protlig_dd.model."""
