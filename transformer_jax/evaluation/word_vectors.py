"""Word vectors: SimLex-999 evaluation, nearest neighbours, word2vec text files, and
initialising a Transformer's embedding table from them.

SimLex-999 (Hill et al., 2014): the Spearman correlation between cosine similarities and
the human `SimLex999` scores over the pairs whose two words are in the vocabulary (that
share is reported as `simlex_coverage`). `eval_metrics` is the word2vec family's entry in
`evaluation.EXTRA_METRICS`; it also writes nearest neighbours of probe words and exports
the vectors as `<workdir>/vectors.txt` in the word2vec text format (`<count> <dim>`, then
`word v1 ... vdim` per line).

Importing this module loads no jax (each function that needs it imports it), so that
validation.py can read a `train.init_embeddings` file before jax loads.
"""
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from absl import logging

from transformer_jax.base.errors import UserError

VECTORS_FILE = 'vectors.txt'
SPIECE_PREFIX = '\u2581'         # sentencepiece's word-start marker


def average_ranks(values) -> np.ndarray:
  """Ranks 1..n of `values`, tied values sharing the mean of their ranks."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind='stable')
  ranks = np.empty(len(values))
  sorted_values = values[order]
  start = 0
  while start < len(values):
    stop = start
    while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
      stop += 1
    ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
    start = stop + 1
  return ranks


def spearman(x, y) -> float:
  """Spearman's rho: Pearson correlation of the average ranks (NaN when a side is constant)."""
  rx, ry = average_ranks(x), average_ranks(y)
  rx, ry = rx - rx.mean(), ry - ry.mean()
  denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
  return float((rx * ry).sum() / denominator) if denominator > 0 else float('nan')


def read_simlex(path: str) -> List[Tuple[str, str, float]]:
  """(word1, word2, SimLex999 score) of each pair of the tab-separated file with header."""
  if not os.path.isfile(path):
    raise UserError(f'no SimLex-999 file {os.path.abspath(path)}: set '
                    '--experiment.eval.simlex_path to SimLex-999.txt')
  with open(path, encoding='utf-8') as f:
    header = f.readline().rstrip('\n').split('\t')
    try:
      columns = [header.index(name) for name in ('word1', 'word2', 'SimLex999')]
    except ValueError:
      raise UserError(f'{path}: header lacks word1/word2/SimLex999: use the original '
                      'SimLex-999.txt') from None
    rows = [line.rstrip('\n').split('\t') for line in f if line.strip()]
  return [(r[columns[0]].lower(), r[columns[1]].lower(), float(r[columns[2]])) for r in rows]


def unit_rows(matrix) -> np.ndarray:
  """Rows scaled to unit length (zero rows stay zero)."""
  matrix = np.asarray(matrix, np.float64)
  norms = np.linalg.norm(matrix, axis=1, keepdims=True)
  return matrix / np.where(norms > 0, norms, 1.0)


def simlex_scores(vocab: Sequence[str], vectors, pairs) -> Dict[str, float]:
  """`simlex_spearman` over the covered pairs and `simlex_coverage` (their share)."""
  index = {w: i for i, w in enumerate(vocab)}
  unit = unit_rows(vectors)
  covered = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
  if len(covered) < 2:
    return {'simlex_spearman': float('nan'), 'simlex_coverage': len(covered) / len(pairs)}
  cosines = [float(unit[i] @ unit[j]) for i, j, _ in covered]
  return {'simlex_spearman': spearman(cosines, [s for _, _, s in covered]),
          'simlex_coverage': len(covered) / len(pairs)}


def nearest_neighbours(vocab, vectors, word: str, k: int = 8, skip: int = 2):
  """The k words of highest cosine to `word` (ids below `skip`, the specials, excluded)."""
  index = {w: i for i, w in enumerate(vocab)}
  if word not in index:
    return []
  unit = unit_rows(vectors)
  cosines = unit @ unit[index[word]]
  cosines[:skip] = -np.inf
  cosines[index[word]] = -np.inf
  best = np.argsort(-cosines, kind='stable')[:k]
  return [(vocab[i], float(cosines[i])) for i in best]


def save_word2vec_text(path: str, vocab: Sequence[str], vectors) -> None:
  """`<count> <dim>` then `word v1 ... vdim` per word; written to a temporary file first."""
  vectors = np.asarray(vectors, np.float32)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(f'{len(vocab)} {vectors.shape[1]}\n')
    for word, row in zip(vocab, vectors):
      f.write(word + ' ' + ' '.join(f'{v:.6g}' for v in row) + '\n')
  os.replace(tmp, path)


# The fix a malformed vectors file is refused with.
_REGENERATE = ('regenerate it in word2vec text format (a word2vec run, experiments/word2vec.py, '
               'writes <workdir>/vectors.txt), or set --experiment.train.init_embeddings=""')


def _header(path: str, raw: bytes) -> Tuple[int, int]:
  """(count, dim) of the first line, `<count> <dim>`."""
  text = raw.decode('utf-8', 'replace').strip()
  fields = text.split()
  if len(fields) == 2 and all(f.isascii() and f.isdigit() for f in fields) and int(fields[1]) > 0:
    return int(fields[0]), int(fields[1])
  shown = text if len(text) <= 40 else text[:40] + '...'
  raise UserError(f'{path}:1: header {shown!r} is not "<count> <dim>" (two integers, dim >= 1): '
                  f'{_REGENERATE}')


def _row(path: str, number: int, fields: List[str]) -> np.ndarray:
  """The float32 vector of a line's fields after the word; a field that is no number is refused."""
  try:
    with np.errstate(over='ignore'):     # '1e40' overflows float32 to inf: refused later
      return np.asarray(fields[1:], np.float32)
  except ValueError:
    pass
  for position, value in enumerate(fields[1:], start=1):
    try:
      float(value)
    except ValueError:
      shown = value if len(value) <= 20 else value[:20] + '...'
      raise UserError(f'{path}:{number}: value {position} of {fields[0]!r} is {shown!r}, not a '
                      f'number: {_REGENERATE}') from None
  raise UserError(f'{path}:{number}: the values of {fields[0]!r} are not numbers: {_REGENERATE}')


def _parse_word2vec_text(path: str) -> Tuple[List[str], np.ndarray]:
  """(words, float32 [count, dim]); any malformed line, or a NaN or infinite value, is a
  UserError naming the file and the line."""
  with open(path, 'rb') as f:
    count, dim = _header(path, f.readline())
    words, rows = [], []
    for number, raw in enumerate(f, start=2):
      try:
        line = raw.decode('utf-8').rstrip('\r\n')
      except UnicodeDecodeError:
        raise UserError(f'{path}:{number}: not UTF-8 text: {_REGENERATE}') from None
      fields = line.split(' ')
      if len(fields) != dim + 1:
        raise UserError(f'{path}:{number}: expected a word and {dim} numbers, got '
                        f'{len(fields) - 1}: {_REGENERATE}')
      words.append(fields[0])
      rows.append(_row(path, number, fields))
  if len(words) != count:
    raise UserError(f'{path}:1: header says {count} words, file has {len(words)}: {_REGENERATE}')
  vectors = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
  finite = np.isfinite(vectors)
  if not finite.all():
    row, column = (int(i[0]) for i in np.nonzero(~finite))
    raise UserError(f'{path}:{row + 2}: value {column + 1} of {words[row]!r} is '
                    f'{vectors[row, column]}, which would make the loss NaN from the first step '
                    '(did the word2vec run that wrote it diverge?): regenerate it from a run whose '
                    'vectors are finite, or set --experiment.train.init_embeddings=""')
  return words, vectors


def load_word2vec_text(path: str) -> Tuple[List[str], np.ndarray]:
  """(words, float32 [count, dim]) of a word2vec text file.

  Raises:
    UserError: the file is missing, malformed (header, a line's field count, a value that is
      no number, bytes that are not UTF-8) or holds a NaN or infinite value; the message
      names the file, the line and the fix.
  """
  if not os.path.isfile(path):
    raise UserError(f'no word vectors file {os.path.abspath(path)}: set '
                    '--experiment.train.init_embeddings to a vectors.txt (word2vec text format)')
  return _parse_word2vec_text(path)


def check_word2vec_text(path: str) -> int:
  """Reads the word2vec text file `path` as `load_word2vec_text` does, raising the same
  UserErrors; returns its vectors' dim. validation.py calls it (no jax loaded) so that a bad
  file is refused before a training writes anything."""
  return load_word2vec_text(path)[1].shape[1]


def _probe_words(eval_config) -> List[str]:
  return [w.strip() for w in eval_config.get('probe_words', '').split(',') if w.strip()]


def write_neighbours(path: str, vocab, vectors, probes: Sequence[str]) -> None:
  """One line per probe word: `word: n1 (cos) n2 (cos) ...`."""
  with open(path, 'w', encoding='utf-8') as f:
    for word in probes:
      found = nearest_neighbours(vocab, vectors, word)
      listed = ' '.join(f'{w} ({c:.2f})' for w, c in found) if found else '(not in vocabulary)'
      f.write(f'{word}: {listed}\n')


def eval_metrics(evaluator, params, step: int) -> Dict[str, float]:
  """SimLex-999 metrics of the word2vec input vectors; process 0 also writes
  `eval/neighbours_step<N>.txt` and `vectors.txt` in the workdir."""
  import jax                                     # pylint: disable=import-outside-toplevel
  from transformer_jax.models import word2vec   # pylint: disable=import-outside-toplevel
  host_params = evaluator.parts.runner.get_state(params)
  vectors = np.asarray(jax.device_get(word2vec.input_embeddings(host_params)))
  vocab = evaluator.parts.tokenizer.vocab
  vectors = vectors[:len(vocab)]
  metrics = simlex_scores(vocab, vectors, read_simlex(evaluator.config.eval.simlex_path))
  if jax.process_index() == 0:
    out_dir = os.path.join(evaluator.workdir, 'eval')
    os.makedirs(out_dir, exist_ok=True)
    write_neighbours(os.path.join(out_dir, f'neighbours_step{step}.txt'), vocab, vectors,
                     _probe_words(evaluator.config.eval))
    save_word2vec_text(os.path.join(evaluator.workdir, VECTORS_FILE), vocab[2:], vectors[2:])
  return metrics


def piece_word(piece: str) -> str:
  """A sentencepiece piece as a word: without the '▁' prefix, lowercased."""
  return piece[len(SPIECE_PREFIX):].lower() if piece.startswith(SPIECE_PREFIX) else piece.lower()


def set_embedding_rows(params, pieces: Sequence[str], words: Sequence[str], vectors,
                       model_dim: int):
  """Copies `vectors` into every embedding table's rows whose piece is a word of `words`.

  Args:
    params: model params; tables are the 2-D leaves named 'embedding'.
    pieces: the tokenizer's piece of each id.
    words: words of the vectors file.
    vectors: float [len(words), dim].
    model_dim: the model's embedding size; must equal dim.

  Returns:
    (new params, number of ids set per table).
  """
  import jax                                     # pylint: disable=import-outside-toplevel
  vectors = np.asarray(vectors)
  if vectors.shape[1] != model_dim:
    raise UserError(f'word vectors have dim {vectors.shape[1]} but model_dim is {model_dim}: '
                    'train vectors of that size or set --experiment.train.init_embeddings=""')
  index = {w: i for i, w in enumerate(words)}
  pairs = [(i, index[piece_word(p)]) for i, p in enumerate(pieces) if piece_word(p) in index]
  ids = np.array([i for i, _ in pairs], np.int64)
  rows = vectors[[j for _, j in pairs]] if pairs else np.zeros((0, model_dim))

  def set_rows(path, leaf):
    if getattr(path[-1], 'key', None) != 'embedding' or np.ndim(leaf) != 2:
      return leaf
    table = np.array(leaf)
    table[ids] = rows.astype(table.dtype)
    return table

  return jax.tree_util.tree_map_with_path(set_rows, params), len(ids)


def init_embeddings(state, tokenizer, path: str, model_config):
  """`state` with embedding rows set from the word2vec text file `path` (fresh runs).

  Args:
    state: a fresh TrainState.
    tokenizer: a sentencepiece `Tokenizer` (its pieces name the rows).
    path: word2vec text file, e.g. a word2vec run's vectors.txt.
    model_config: the family's config (`model_dim`, or `embed_dim`).

  Returns:
    the state with the rows of every piece that is a word of the file replaced.
  """
  import jax                                     # pylint: disable=import-outside-toplevel
  model_dim = getattr(model_config, 'model_dim', None) or model_config.embed_dim
  if not hasattr(tokenizer, 'pieces'):
    raise UserError('train.init_embeddings needs a sentencepiece tokenizer: set '
                    '--experiment.train.init_embeddings="" for this dataset')
  words, vectors = load_word2vec_text(path)
  pieces = tokenizer.pieces(range(tokenizer.vocab_size))
  params, count = set_embedding_rows(state.params, pieces, words, vectors, model_dim)
  logging.info('init_embeddings: set %d of %d embedding rows from %s', count, len(pieces), path)
  return state.replace(params=jax.tree_util.tree_map(jax.numpy.asarray, params))
