"""transformer_jax: the Transformer (Vaswani et al., 2017) and its relatives as functional Flax modules."""
