"""The command-line modes (train, eval, translate, sample, export) and experiment configs with their overrides."""
