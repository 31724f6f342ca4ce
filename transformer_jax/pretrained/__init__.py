"""Trained models in folders of their own: `--mode=export` writes one (export.py), and
`load_pretrained` (loading.py) reads it back for translation, sampling and scoring."""
from transformer_jax.pretrained.loading import load_pretrained
from transformer_jax.pretrained.loading import Pretrained
