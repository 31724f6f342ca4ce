"""Trained runs read back: a run's restored params (restored.py), and models in folders of their
own: `--mode=export` writes one (export.py, layout.py), and `load_pretrained` (loading.py, also
named `from_pretrained`) reads it back for translation, sampling and scoring."""
from transformer_jax.pretrained.loading import from_pretrained
from transformer_jax.pretrained.loading import load_pretrained
from transformer_jax.pretrained.loading import Pretrained
