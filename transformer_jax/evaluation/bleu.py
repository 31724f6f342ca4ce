"""Translation metrics: sacreBLEU, the tokenized lowercased BLEU of the Multi30k papers,
BLEU by source length (a table and a plot), and perplexity.

Two BLEU numbers are reported because the literature uses both: sacreBLEU (Post, 2018)
on detokenized, cased text is comparable across papers when its signature matches;
most Multi30k results (Elliott et al., 2016, and the systems evaluated on it) are
multi-bleu.perl scores on the dataset's own preprocessing (lowercase, Moses punctuation
normalisation, Moses tokenisation), which `bleu_tok_lc` reproduces.

Their names are the same everywhere (metrics.jsonl, TensorBoard tags, the console, the eval
JSON and these functions' rows): `sacrebleu` for cased sacreBLEU, `bleu_tok_lc` for the other.
"""
import functools
import math

import sacrebleu
import sacremoses

# Lower bounds of the source-length buckets, in words: 0-9, 10-14, 15-19, 20-24, 25+.
DEFAULT_BUCKETS = (0, 10, 15, 20, 25)
METRIC_NAMES = {'bleu_tok_lc': 'BLEU (tokenized, lowercased)', 'sacrebleu': 'sacreBLEU'}
_SACREMOSES_VERSION = getattr(sacremoses, '__version__', 'unknown')


def sacre_bleu(hyps, refs):
  """Corpus sacreBLEU with its default settings: cased, 13a tokenisation, exp smoothing.

  Args:
    hyps: detokenized hypothesis strings.
    refs: one detokenized reference string per hypothesis.

  Returns:
    (score in [0, 100], signature string such as
     'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0').
  """
  metric = sacrebleu.metrics.BLEU()
  score = metric.corpus_score(list(hyps), [list(refs)]).score
  return score, str(metric.get_signature())


@functools.lru_cache(maxsize=None)
def _moses(lang):
  """Building these reads Moses' per-language data files, so do it once per language."""
  return sacremoses.MosesPunctNormalizer(lang=lang), sacremoses.MosesTokenizer(lang=lang)


def moses_preprocess(text, lang='de'):
  """Multi30k's own preprocessing (its scripts/task1-tokenize.sh), in that order.

  1. lowercase (Python's `str.lower`, for lowercase.perl);
  2. `MosesPunctNormalizer(lang).normalize` (normalize-punctuation.perl -l lang);
  3. `MosesTokenizer(lang).tokenize(aggressive_dash_splits=False, escape=False,
     return_str=True)` (tokenizer.perl -l lang without -a: hyphenated words stay
     whole). tokenizer.perl escapes `&'"<>` by default; that only renames tokens
     consistently in hypotheses and references, so BLEU is the same without it.

  Args:
    text: one detokenized sentence.
    lang: its language code, e.g. 'de'.

  Returns:
    The space-separated tokens as one string.
  """
  normalizer, tokenizer = _moses(lang)
  return tokenizer.tokenize(normalizer.normalize(text.lower()), aggressive_dash_splits=False,
                            escape=False, return_str=True)


def bleu_tok_lc(hyps, refs, lang='de'):
  """The BLEU that Multi30k papers report: multi-bleu.perl on preprocessed text.

  Hypotheses and references both go through `moses_preprocess` (lowercase, Moses
  punctuation normalisation, Moses tokenisation for `lang`), then
  `sacrebleu.corpus_bleu(hyps, [refs], tokenize='none', smooth_method='none',
  force=True)`: BLEU on the given tokens, unsmoothed like multi-bleu.perl (smoothing
  would only matter if some n-gram order had no match in the whole corpus).

  Args:
    hyps: detokenized hypothesis strings.
    refs: one detokenized reference string per hypothesis.
    lang: target language, for Moses' language-specific rules.

  Returns:
    BLEU in [0, 100].
  """
  return bleu_tok_lc_scored(hyps, refs, lang)[0]


def bleu_tok_lc_scored(hyps, refs, lang='de'):
  """`bleu_tok_lc` and a signature saying how it was computed.

  Returns:
    (BLEU in [0, 100], signature): sacreBLEU's signature of the scoring call (`tok:none`,
    `smooth:none`; its `case:mixed` compares the already lowercased tokens as they are)
    followed by the preprocessing, e.g. 'nrefs:1|case:mixed|eff:no|tok:none|smooth:none|
    version:2.6.0|pre:lowercase+moses-punct-norm+moses-tok|lang:de|sacremoses:0.2.0'.
  """
  hyps = [moses_preprocess(h, lang) for h in hyps]
  refs = [moses_preprocess(r, lang) for r in refs]
  metric = sacrebleu.metrics.BLEU(tokenize='none', smooth_method='none', force=True)
  score = metric.corpus_score(hyps, [refs]).score
  return score, (f'{metric.get_signature()}|pre:lowercase+moses-punct-norm+moses-tok|'
                 f'lang:{lang}|sacremoses:{_SACREMOSES_VERSION}')


def _bucket_label(lower, upper):
  return f'{lower}+' if upper is None else f'{lower}-{upper - 1}'


def bleu_by_length(sources, hyps, refs, buckets=DEFAULT_BUCKETS, lang='de'):
  """Both BLEU scores per bucket of source length (whitespace-separated words).

  Args:
    sources: detokenized source sentences.
    hyps: hypotheses, aligned with sources.
    refs: references, aligned with sources.
    buckets: increasing lower bounds starting at 0; bucket i holds lengths in
      [buckets[i], buckets[i + 1]) and the last is open-ended, so every sentence
      lands in exactly one bucket.
    lang: target language, for `bleu_tok_lc`.

  Returns:
    One dict per bucket: {'bucket': '10-14', 'count': sentences,
    'bleu_tok_lc': float, 'sacrebleu': float}; both BLEU are NaN for an empty bucket (the
    eval JSON writes null there, with a `<name>_null_reason`).
  """
  if not buckets or buckets[0] != 0 or list(buckets) != sorted(set(buckets)):
    raise ValueError(f'buckets must be increasing lower bounds starting at 0, got {buckets}')
  if not len(sources) == len(hyps) == len(refs):
    raise ValueError(f'{len(sources)} sources, {len(hyps)} hypotheses and {len(refs)} '
                     'references: they must be aligned one to one')
  lengths = [len(src.split()) for src in sources]
  rows = []
  for lower, upper in zip(buckets, list(buckets[1:]) + [None]):
    members = [i for i, n in enumerate(lengths) if lower <= n and (upper is None or n < upper)]
    bucket_hyps, bucket_refs = [hyps[i] for i in members], [refs[i] for i in members]
    rows.append({
        'bucket': _bucket_label(lower, upper),
        'count': len(members),
        'bleu_tok_lc': bleu_tok_lc(bucket_hyps, bucket_refs, lang) if members else math.nan,
        'sacrebleu': sacre_bleu(bucket_hyps, bucket_refs)[0] if members else math.nan,
    })
  return rows


def _score_or_nan(score):
  """A row's score; an eval JSON read back has null (None) where the row was NaN."""
  return math.nan if score is None else score


def _format_score(score):
  return 'n/a' if math.isnan(_score_or_nan(score)) else f'{score:.2f}'


def format_table(rows):
  """Markdown table of `bleu_by_length` rows."""
  lines = ['| source words | sentences | BLEU (tok, lc) | sacreBLEU |',
           '|---|---:|---:|---:|']
  for row in rows:
    lines.append(f"| {row['bucket']} | {row['count']} | {_format_score(row['bleu_tok_lc'])} "
                 f"| {_format_score(row['sacrebleu'])} |")
  return '\n'.join(lines)


def plot_bleu_by_length(rows_by_model, path, metric='bleu_tok_lc'):
  """Grouped bar chart of BLEU per source-length bucket, one bar colour per model.

  Args:
    rows_by_model: {model name: `bleu_by_length` rows}, all with the same buckets.
    path: where to write the PNG.
    metric: 'bleu_tok_lc' or 'sacrebleu'.

  Returns:
    path.
  """
  # Imported here: matplotlib is slow to import and only this function needs it. The
  # Figure/Agg API draws without pyplot's global state or a display.
  from matplotlib.backends import backend_agg
  from matplotlib import figure

  first_rows = next(iter(rows_by_model.values()))
  labels = [f"{row['bucket']}\n(n={row['count']})" for row in first_rows]
  fig = figure.Figure(figsize=(7, 4), layout='constrained')
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.subplots()
  width = 0.8 / len(rows_by_model)
  for m, (name, rows) in enumerate(rows_by_model.items()):
    offsets = [i - 0.4 + width * (m + 0.5) for i in range(len(rows))]
    ax.bar(offsets, [_score_or_nan(row[metric]) for row in rows], width, label=name)
  ax.set_xticks(range(len(labels)), labels)
  ax.set_xlabel('source length (words)')
  ax.set_ylabel(METRIC_NAMES[metric])
  ax.set_title(f'{METRIC_NAMES[metric]} by source length')
  fig.legend(loc='outside right upper')  # outside: bars reach any height
  fig.savefig(path, dpi=120)
  return path


def perplexity(loss_sum, weight):
  """exp(mean token cross-entropy); pass the loss without label smoothing.

  Returns:
    float; inf when the mean loss is too large for exp.
  """
  mean_loss = loss_sum / weight
  return math.inf if mean_loss > 700 else math.exp(mean_loss)
