"""RNN encoder-decoder, with a fixed context vector or with additive attention.

Without attention (`config.attention=False`) this is the model of Cho et al. (2014): the
encoder's final state (both directions concatenated when bidirectional) is the fixed-length
context vector c; the decoder starts from tanh(W c) and reads c at every step, beside the
previous word, and so does the output layer. Sutskever et al. (2014) differ only in
feeding c through the initial state alone.

With attention (Bahdanau et al., 2015) the decoder instead builds a context vector per
step: e_tj = v^T tanh(W s_{t-1} + U h_j) over every encoder state h_j (padding masked),
a_t = softmax(e_t), c_t = sum_j a_tj h_j. The weights a_t are `sow`n as
'intermediates'/'attention_weights' [batch, target_len, source_len] for plotting.

Training is teacher-forced (`__call__`). With `decoding=True`, `decode` runs one target
position per call from the state in the 'cache' collection: the interface predict.py's
searches use for the Transformer too. Packed batches are not supported (an RNN would
carry its state across sentences).
"""
from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.models.transformer import shift_right
from transformer_jax.nn.config import RNNConfig
from transformer_jax.nn import dropout


def make_cell(config: RNNConfig, name: str) -> nn.Module:
  dtype = jnp.dtype(config.dtype)
  if config.cell == 'gru':
    return nn.GRUCell(config.hidden_dim, dtype=dtype, name=name)
  return nn.OptimizedLSTMCell(config.hidden_dim, dtype=dtype, name=name)


def state_of(config: RNNConfig, carry) -> jnp.ndarray:
  """The hidden state h of a cell's carry (an LSTM carry is (c, h))."""
  return carry[1] if config.cell == 'lstm' else carry


def carry_from_state(config: RNNConfig, state: jnp.ndarray):
  """A cell carry whose hidden state is `state` (an LSTM's memory cell starts at zero)."""
  return (jnp.zeros_like(state), state) if config.cell == 'lstm' else state


class RNNEncoder(nn.Module):
  """Embedded source -> (states [batch, src_len, dirs * hidden], final state [batch, dirs * hidden])."""
  config: RNNConfig

  @nn.compact
  def __call__(self, embedded: jnp.ndarray, lengths: jnp.ndarray):
    cfg = self.config
    forward = nn.RNN(make_cell(cfg, 'forward_cell'), name='forward')
    if cfg.bidirectional:
      backward = nn.RNN(make_cell(cfg, 'backward_cell'), name='backward')
      carries, states = nn.Bidirectional(forward, backward, return_carry=True)(
          embedded, seq_lengths=lengths)
      final = jnp.concatenate([state_of(cfg, c) for c in carries], axis=-1)
    else:
      carry, states = forward(embedded, seq_lengths=lengths, return_carry=True)
      final = state_of(cfg, carry)
    # Positions past a sentence's end hold no information: zero them (attention masks
    # them too).
    valid = jnp.arange(embedded.shape[1])[None, :] < lengths[:, None]
    return jnp.where(valid[..., None], states, 0.0), final


class AdditiveAttention(nn.Module):
  """Bahdanau scores v^T tanh(W s + U h_j); `keys` = U h_j is computed once per sentence."""
  config: RNNConfig

  @nn.compact
  def __call__(self, query: jnp.ndarray, keys: jnp.ndarray, values: jnp.ndarray,
               mask: jnp.ndarray):
    """query [batch, hidden], keys [batch, src, attn], values [batch, src, d], mask [batch, src]
    -> (context [batch, d], weights [batch, src])."""
    projected = nn.Dense(self.config.attention_dim, use_bias=False, name='query')(query)
    scores = nn.Dense(1, use_bias=False, name='score')(jnp.tanh(keys + projected[:, None]))[..., 0]
    scores = jnp.where(mask, scores.astype(jnp.float32), -1e9)
    weights = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum('bs,bsd->bd', weights.astype(values.dtype), values)
    return context, weights


class DecoderStep(nn.Module):
  """One decoder step: (carry, previous word) -> (carry, (readout input, attention weights))."""
  config: RNNConfig

  @nn.compact
  def __call__(self, carry, embedded: jnp.ndarray, memory: Dict[str, jnp.ndarray]):
    cfg = self.config
    if cfg.attention:
      context, weights = AdditiveAttention(cfg, name='attention')(
          state_of(cfg, carry), memory['keys'], memory['states'], memory['mask'])
    else:
      context = memory['context']
      weights = jnp.zeros(memory['mask'].shape, jnp.float32)
    carry, state = make_cell(cfg, 'cell')(carry, jnp.concatenate([embedded, context], axis=-1))
    # The output layer sees the new state, the context and the previous word (both papers).
    features = jnp.concatenate([state, context, embedded], axis=-1)
    return carry, (features, weights)


class RNNSeq2Seq(nn.Module):
  """The RNN encoder-decoder; see the module docstring. Same interface as `Transformer`."""
  config: RNNConfig
  decoding: bool = False

  def setup(self):
    cfg = self.config
    self.source_embed = nn.Embed(cfg.vocab_size, cfg.embed_dim, name='source_embed')
    self.target_embed = (self.source_embed if cfg.share_embeddings else
                         nn.Embed(cfg.output_vocab_size, cfg.embed_dim, name='target_embed'))
    self.encoder = RNNEncoder(cfg)
    self.bridge = nn.Dense(cfg.hidden_dim, name='bridge')         # s_0 = tanh(W c)
    self.keys = nn.Dense(cfg.attention_dim, use_bias=False, name='keys')   # U h_j
    self.step = nn.scan(DecoderStep, variable_broadcast='params', split_rngs={'params': False},
                        in_axes=(1, nn.broadcast), out_axes=1)(cfg, name='decoder')
    self.readout = nn.Dense(cfg.embed_dim, name='readout')
    self.logits = nn.Dense(cfg.output_vocab_size, name='logits')
    self.dropout = dropout.Dropout(cfg.dropout_rate)

  def encode(self, inputs: jnp.ndarray, deterministic: bool = True) -> Dict[str, jnp.ndarray]:
    """inputs [batch, src_len] -> {'states', 'final'}: what the decoder reads."""
    lengths = jnp.sum(inputs != self.config.pad_id, axis=-1)
    embedded = self.dropout(self.source_embed(inputs), deterministic=deterministic)
    states, final = self.encoder(embedded, lengths)
    return {'states': states, 'final': final}

  def _memory(self, encoded, inputs):
    memory = {'states': encoded['states'], 'mask': inputs != self.config.pad_id,
              'context': encoded['final']}
    if self.config.attention:
      memory['keys'] = self.keys(encoded['states'])
    return memory

  def _initial_carry(self, encoded):
    return carry_from_state(self.config, jnp.tanh(self.bridge(encoded['final'])))

  def _output(self, features, deterministic):
    hidden = jnp.tanh(self.readout(features))
    return self.logits(self.dropout(hidden, deterministic=deterministic)).astype(jnp.float32)

  def decode(self, encoded, inputs: jnp.ndarray, targets: jnp.ndarray,
             deterministic: bool = True) -> jnp.ndarray:
    """Logits [batch, tgt_len, vocab]; teacher-forced, or one cached step when decoding.

    Teacher-forced: `targets` are the gold outputs, read shifted right. Decoding: the
    first call creates the cache (its output is unused); each later call takes the
    previous output ids [batch, 1] and returns the next position's logits.
    """
    memory = self._memory(encoded, inputs)
    if not self.decoding:
      embedded = self.dropout(self.target_embed(shift_right(targets, bos_id=self.config.pad_id)),
                              deterministic=deterministic)
      _, (features, weights) = self.step(self._initial_carry(encoded), embedded, memory)
      self.sow('intermediates', 'attention_weights', weights)
      return self._output(features, deterministic)
    if not self.has_variable('cache', 'carry'):
      self.put_variable('cache', 'carry', self._initial_carry(encoded))
      return jnp.zeros(targets.shape + (self.config.output_vocab_size,), jnp.float32)
    embedded = self.target_embed(targets)
    carry, (features, weights) = self.step(self.get_variable('cache', 'carry'), embedded, memory)
    self.put_variable('cache', 'carry', carry)
    self.sow('intermediates', 'attention_weights', weights)
    return self._output(features, deterministic)

  def __call__(self, inputs: jnp.ndarray, targets: jnp.ndarray,
               inputs_position: Optional[Any] = None, targets_position: Optional[Any] = None,
               inputs_segmentation: Optional[Any] = None,
               targets_segmentation: Optional[Any] = None,
               deterministic: bool = True) -> jnp.ndarray:
    """Teacher-forced logits [batch, tgt_len, vocab] for padded (not packed) batches."""
    del inputs_position, targets_position        # an RNN knows positions by reading in order
    if inputs_segmentation is not None or targets_segmentation is not None:
      raise ValueError('RNNSeq2Seq does not take packed batches: set data.pack=False')
    encoded = self.encode(inputs, deterministic=deterministic)
    return self.decode(encoded, inputs, targets, deterministic=deterministic)
