"""Train stage: splits, both regimes, checkpoints, and the run folder."""
