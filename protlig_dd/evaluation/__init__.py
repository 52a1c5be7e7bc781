"""protlig_dd.evaluation."""
