"""Deprecated: the model configs moved to `transformer_jax.nn.config`; this path re-exports
them for one release (experiment files written for 0.1 keep loading) and warns."""
import warnings

from transformer_jax.nn.config import *  # noqa: F401,F403  (the whole public surface)
from transformer_jax.nn.config import NAMED_SETTINGS  # noqa: F401

warnings.warn('transformer_jax.config moved to transformer_jax.nn.config: import it from there '
              '(the old path goes away in the next release)', DeprecationWarning, stacklevel=2)
