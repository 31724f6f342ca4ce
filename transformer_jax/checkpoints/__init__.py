"""Checkpoints: saving and restoring, integrity seals, damage handling and retention, averaging."""
