"""protlig_dd.data."""
