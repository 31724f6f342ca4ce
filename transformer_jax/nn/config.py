"""TransformerConfig: the model's hyper-parameters in one frozen dataclass.

`TransformerConfig(**config.model)` is the only bridge from an experiment file into model
code. Named settings (`TransformerConfig.named('base')`) give the paper's Table 3 "base"
and "big" models (Vaswani et al., 2017, §6.2) and a `tiny` one for CPU work.
"""
import dataclasses
from typing import Any, Optional

POSITIONAL_KINDS = ('sinusoidal', 'learned', 'multiplicative', 'rotary', 'none')
# The kinds that read a [max_len, d] table, so cannot take a sequence longer than max_len.
TABLE_POSITIONAL_KINDS = ('sinusoidal', 'learned', 'multiplicative')
NORM_ORDERS = ('post', 'pre')
ACTIVATIONS = ('relu', 'gelu')
ATTENTION_IMPLS = ('explicit', 'xla', 'cudnn', 'auto')
DTYPES = ('float32', 'bfloat16', 'float16')
# Names outside the model that an experiment config may use (jax-free, for validation.py).
DECODE_METHODS = ('greedy', 'beam', 'sample')
SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of the encoder-decoder Transformer and its halves.

  Attributes:
    vocab_size: source vocabulary (and target too when `share_embeddings`).
    target_vocab_size: target vocabulary; None means the same as `vocab_size`.
    share_embeddings: one embedding matrix for source and target (paper §3.4);
      needs equal vocabularies.
    tie_output: the pre-softmax projection is the transposed target embedding (§3.4).
    scale_embeddings: multiply embeddings by sqrt(model_dim) (§3.4).
    model_dim: d_model.
    num_heads: h.
    head_dim: d_k (query/key size per head); None means model_dim // num_heads.
    value_dim: d_v (value size per head); None means `head_dim`.
    mlp_dim: d_ff, the inner size of the position-wise FFN.
    num_layers: N, encoder layers.
    num_decoder_layers: decoder layers; None means `num_layers`.
    dropout_rate: P_drop on every sub-layer output and the embedding sum (§5.4).
    attention_dropout_rate: dropout on the attention weights (0 in the paper).
    activation: FFN non-linearity, 'relu' (paper) or 'gelu'.
    norm_order: 'post' (LayerNorm(x + Sublayer(x)), the paper) or 'pre'.
    positional: 'sinusoidal' (paper), 'learned' (Table 3 row E), 'multiplicative',
      'rotary' (RoPE inside attention) or 'none'.
    max_len: longest sequence the position tables and decode cache cover. A table
      kind (TABLE_POSITIONAL_KINDS) refuses longer inputs, so --mode=translate and
      evaluation cut them to it (see `max_input_len`); decoded outputs never exceed it.
    attention_scale: logit scale; None is the paper's 1/sqrt(d_k), 1.0 the
      "no scaling" ablation, or any float.
    rope_max_wavelength: base of the RoPE frequencies.
    attention_impl: how attention is computed (ATTENTION_IMPLS):
      'explicit' (our einsum-softmax-einsum, the reference), 'xla' or 'cudnn'
      (`jax.nn.dot_product_attention` with that implementation; cuDNN flash
      attention needs a GPU and bfloat16/float16), or 'auto' ('cudnn' where it applies,
      else 'explicit'). Parameters and results are the same; weights are sown and
      attention dropout applied through 'explicit' whatever is chosen.
    dtype: compute dtype name; parameters are stored in `param_dtype`.
    param_dtype: parameter dtype name.
    pad_id: padding id (also the BOS the decoder input starts with).
  """
  vocab_size: int = 32000
  target_vocab_size: Optional[int] = None
  share_embeddings: bool = True
  tie_output: bool = True
  scale_embeddings: bool = True
  model_dim: int = 512
  num_heads: int = 8
  head_dim: Optional[int] = None
  value_dim: Optional[int] = None
  mlp_dim: int = 2048
  num_layers: int = 6
  num_decoder_layers: Optional[int] = None
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  activation: str = 'relu'
  norm_order: str = 'post'
  positional: str = 'sinusoidal'
  max_len: int = 256
  attention_scale: Optional[float] = None
  rope_max_wavelength: float = 10_000.0
  attention_impl: str = 'explicit'
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  pad_id: int = 0

  def __post_init__(self):
    checks = [
        (self.positional in POSITIONAL_KINDS, f'positional={self.positional!r}: use one of {POSITIONAL_KINDS}'),
        (self.norm_order in NORM_ORDERS, f'norm_order={self.norm_order!r}: use one of {NORM_ORDERS}'),
        (self.attention_impl in ATTENTION_IMPLS,
         f'attention_impl={self.attention_impl!r}: use one of {ATTENTION_IMPLS}'),
        (self.activation in ACTIVATIONS, f'activation={self.activation!r}: use one of {ACTIVATIONS}'),
        (self.dtype in DTYPES and self.param_dtype in DTYPES,
         f'dtype={self.dtype!r}, param_dtype={self.param_dtype!r}: use names from {DTYPES}'),
        (self.head_dim is not None or self.model_dim % self.num_heads == 0,
         f'model_dim={self.model_dim} is not divisible by num_heads={self.num_heads}: set head_dim explicitly'),
        (not self.share_embeddings or self.target_vocab_size in (None, self.vocab_size),
         f'share_embeddings needs one vocabulary, got {self.vocab_size} and {self.target_vocab_size}: '
         'set share_embeddings=False or equal sizes'),
        (self.positional != 'rotary' or self.qk_dim % 2 == 0,
         f'rotary positions need an even head_dim, got {self.qk_dim}'),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(f'TransformerConfig: {message}')

  @property
  def qk_dim(self) -> int:
    """d_k, the per-head query/key size."""
    return self.head_dim if self.head_dim is not None else self.model_dim // self.num_heads

  @property
  def v_dim(self) -> int:
    """d_v, the per-head value size."""
    return self.value_dim if self.value_dim is not None else self.qk_dim

  @property
  def decoder_layers(self) -> int:
    return self.num_decoder_layers if self.num_decoder_layers is not None else self.num_layers

  @property
  def output_vocab_size(self) -> int:
    return self.target_vocab_size if self.target_vocab_size is not None else self.vocab_size

  @property
  def max_input_len(self) -> Optional[int]:
    """Most tokens a sequence fed to the model may hold: max_len for a table of positions,
    None (any length) for 'rotary' and 'none'."""
    return self.max_len if self.positional in TABLE_POSITIONAL_KINDS else None

  def replace(self, **changes: Any) -> 'TransformerConfig':
    return dataclasses.replace(self, **changes)

  @classmethod
  def named(cls, name: str, **overrides: Any) -> 'TransformerConfig':
    """One of NAMED_SETTINGS ('tiny', 'base', 'big'), with `overrides` applied."""
    if name not in NAMED_SETTINGS:
      raise ValueError(f'unknown model setting {name!r}: use one of {sorted(NAMED_SETTINGS)}')
    return cls(**{**NAMED_SETTINGS[name], **overrides})


# Table 3 of the paper: base (N=6, d_model 512, d_ff 2048, h 8, P_drop 0.1) and
# big (N=6, d_model 1024, d_ff 4096, h 16, P_drop 0.3); tiny is a CPU-sized model.
NAMED_SETTINGS = {
    'tiny': dict(model_dim=128, num_heads=4, mlp_dim=256, num_layers=4, dropout_rate=0.3),
    'base': dict(model_dim=512, num_heads=8, mlp_dim=2048, num_layers=6, dropout_rate=0.1),
    'big': dict(model_dim=1024, num_heads=16, mlp_dim=4096, num_layers=6, dropout_rate=0.3),
}


CELLS = ('gru', 'lstm')


@dataclasses.dataclass(frozen=True)
class RNNConfig:
  """Hyper-parameters of the RNN encoder-decoder (Cho et al., 2014; Sutskever et al., 2014)
  and of its attention variant (Bahdanau et al., 2015).

  Attributes:
    vocab_size: source vocabulary (and target too when `share_embeddings`).
    target_vocab_size: target vocabulary; None means the same as `vocab_size`.
    share_embeddings: one embedding table for source and target.
    cell: 'gru' or 'lstm'.
    attention: additive attention over the encoder states at every decoder step
      (Bahdanau); False keeps only the fixed-length context vector (Cho).
    bidirectional: the encoder reads the source both ways and concatenates the states.
    embed_dim: size of the word embeddings.
    hidden_dim: size of each RNN state (per direction in the encoder).
    attention_dim: size of the additive attention's hidden layer.
    dropout_rate: dropout on embeddings and on the layer below the output softmax.
    max_len: longest target a decoding cache is made for.
    dtype: compute dtype name.
    pad_id: padding id (also the BOS the decoder input starts with).
  """
  vocab_size: int = 10000
  target_vocab_size: Optional[int] = None
  share_embeddings: bool = True
  cell: str = 'gru'
  attention: bool = True
  bidirectional: bool = True
  embed_dim: int = 256
  hidden_dim: int = 512
  attention_dim: int = 256
  dropout_rate: float = 0.2
  max_len: int = 256
  dtype: str = 'float32'
  pad_id: int = 0

  def __post_init__(self):
    if self.cell not in CELLS:
      raise ValueError(f'RNNConfig: cell={self.cell!r}: use one of {CELLS}')
    if self.dtype not in DTYPES:
      raise ValueError(f'RNNConfig: dtype={self.dtype!r}: use one of {DTYPES}')
    if self.share_embeddings and self.target_vocab_size not in (None, self.vocab_size):
      raise ValueError('RNNConfig: share_embeddings needs one vocabulary: set '
                       'share_embeddings=False or equal sizes')

  @property
  def output_vocab_size(self) -> int:
    return self.target_vocab_size if self.target_vocab_size is not None else self.vocab_size

  @property
  def max_input_len(self) -> Optional[int]:
    """None: the RNNs read sources of any length (max_len bounds only the outputs)."""
    return None

  def replace(self, **changes: Any) -> 'RNNConfig':
    return dataclasses.replace(self, **changes)


POOLINGS = ('mean', 'cls')


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(TransformerConfig):
  """An encoder-only Transformer with a classification head.

  Attributes (besides TransformerConfig's; the decoder fields are unused):
    num_classes: number of labels.
    pooling: 'mean' (mean of the encoder outputs over real tokens) or 'cls' (the output
      at a class token prepended to every sentence).
  """
  num_classes: int = 2
  pooling: str = 'mean'

  def __post_init__(self):
    super().__post_init__()
    if self.pooling not in POOLINGS:
      raise ValueError(f'ClassifierConfig: pooling={self.pooling!r}: use one of {POOLINGS}')
    if self.num_classes < 2:
      raise ValueError(f'ClassifierConfig: num_classes={self.num_classes} must be at least 2')

  @property
  def max_input_len(self) -> Optional[int]:
    """As TransformerConfig's, less the position the class token takes under 'cls' pooling."""
    limit = super().max_input_len
    return limit - 1 if limit is not None and self.pooling == 'cls' else limit


WORD2VEC_MODES = ('skipgram', 'cbow')


@dataclasses.dataclass(frozen=True)
class Word2VecConfig:
  """word2vec (Mikolov et al., 2013) with negative sampling.

  Attributes:
    vocab_size: number of words (0 in an experiment: the data's vocabulary).
    embed_dim: size of the word vectors.
    mode: 'skipgram' (center word predicts each context word) or 'cbow' (the mean of the
      context words predicts the center word).
    pad_id: padding id (masked out of CBOW means and of the loss).
  """
  vocab_size: int = 10000
  embed_dim: int = 128
  mode: str = 'skipgram'
  pad_id: int = 0

  def __post_init__(self):
    if self.mode not in WORD2VEC_MODES:
      raise ValueError(f'Word2VecConfig: mode={self.mode!r}: use one of {WORD2VEC_MODES}')

  @property
  def max_input_len(self) -> Optional[int]:
    """None: word2vec reads word pairs, not sequences."""
    return None
