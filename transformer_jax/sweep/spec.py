"""What a sweep is: a base experiment, named rows of config overrides, the seeds to repeat each
row with and the budget each member trains for. A sweep file (e.g.
experiments/ablations/table3.py) defines `get_sweep(arg=None) -> Sweep`; sweep/loading.py reads
and checks one. Nothing here imports jax.
"""
import dataclasses
import hashlib
import itertools
import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from transformer_jax.base.errors import UserError

NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')

# Metrics a report shows when present, in this order; the sweep's own `metric` comes first.
METRICS = ('bleu_tok_lc', 'sacrebleu', 'loss', 'perplexity', 'accuracy', 'exact_match')


@dataclasses.dataclass(frozen=True)
class Row:
  """One configuration of the sweep.

  Attributes:
    name: a short name, also the start of its members' folder names ([A-Za-z0-9_.-]).
    overrides: {'section.field': value} applied to the base config (Python values).
    seeds: this row's seeds; None takes the sweep's `seeds`.
    note: what the row changes, for the report (e.g. 'h=1, d_k=128').
    paper: the paper's numbers for this row, e.g. {'bleu': 24.9, 'ppl': 5.29}, shown beside ours.
    scale_lr_with_width: set optim.learning_rate to the baseline's times (baseline d_model /
      this row's d_model) ** 0.5, the paper's d_model^-0.5 rule.
    tune: a small inner grid, e.g. {'model.dropout_rate': [0.1, 0.3]}: every setting is
      trained with every seed (members `<row>_t<k>_seed<s>`), and the report keeps the setting
      with the lowest mean validation loss, saying so.
  """
  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  seeds: Optional[Sequence[int]] = None
  note: str = ''
  paper: Mapping[str, float] = dataclasses.field(default_factory=dict)
  scale_lr_with_width: bool = False
  tune: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)

  def tune_settings(self) -> List[Dict[str, Any]]:
    """The combinations of the row's inner tuning grid ([{}] without one)."""
    keys = list(self.tune)
    return [dict(zip(keys, values)) for values in itertools.product(*(self.tune[k] for k in keys))]


@dataclasses.dataclass(frozen=True)
class Grid:
  """Rows for every combination of some settings, named after them:
  `Grid({'model.num_heads': [1, 8], 'model.dropout_rate': [0.1, 0.3]}).rows()` gives
  num_heads1_dropout_rate0.1, num_heads1_dropout_rate0.3, num_heads8_dropout_rate0.1, ...

  Attributes:
    axes: {'section.field': values}; the first key varies slowest.
    prefix: put before every name (e.g. 'A_').
    seeds: the rows' seeds (None: the sweep's).
  """
  axes: Mapping[str, Sequence[Any]]
  prefix: str = ''
  seeds: Optional[Sequence[int]] = None

  def rows(self) -> List[Row]:
    keys = list(self.axes)
    out = []
    for values in itertools.product(*(self.axes[k] for k in keys)):
      parts = [f'{k.rsplit(".", 1)[-1]}{flag_value(v)}' for k, v in zip(keys, values)]
      out.append(Row(self.prefix + '_'.join(parts), dict(zip(keys, values)), seeds=self.seeds,
                     note=', '.join(f'{k.rsplit(".", 1)[-1]}={v}' for k, v in zip(keys, values))))
    return out


BUDGET_KINDS = ('steps', 'plateau', 'tokens', 'flops')


def count_params(config) -> int:
  """The Transformer's parameter count for a config (shapes only; imports jax, which only a
  FLOP-matched budget needs here)."""
  from transformer_jax.models import summary
  from transformer_jax.nn.config import TransformerConfig
  fields = {k: v for k, v in config.model.to_dict().items() if k != 'family'}
  fields['vocab_size'] = fields.get('vocab_size') or config.data.vocab_size
  return summary.count_params(summary.transformer_param_shapes(TransformerConfig(**fields)))


@dataclasses.dataclass(frozen=True)
class Budget:
  """How long each member trains.

  kinds:
    'steps'    train.num_steps of the experiment (with the sweep's overrides), as before.
    'plateau'  until the validation loss has not improved for `patience` evaluations
               `eval_every_steps` apart (train.early_stop_patience; early_stop.py), at most
               `max_steps`; checkpoints are saved at every evaluation and the last
               patience + 1 of them (the plateau) are kept and averaged for the final result.
    'tokens'   `tokens` target slots per member: num_steps = tokens / data.tokens_per_batch,
               so rows with other batch sizes see the same data.
    'flops'    `flops` training FLOPs per member, counted as 6 x parameters x target slots
               per step: num_steps = flops / (6 N tokens_per_batch), so a wider row trains
               fewer steps (the parameters are counted from shapes, with data.vocab_size).
  """
  kind: str = 'steps'
  patience: int = 5
  eval_every_steps: int = 100
  max_steps: int = 0
  tokens: int = 0
  flops: float = 0.0

  def overrides(self, config) -> Dict[str, Any]:
    """The train/eval settings this budget sets on a member whose config is `config`."""
    if self.kind == 'steps':
      return {}
    if self.kind == 'plateau':
      return {'train.early_stop_patience': self.patience,
              'train.eval_every_steps': self.eval_every_steps,
              'train.checkpoint_every_steps': self.eval_every_steps,
              'train.keep_checkpoints': self.patience + 1,
              'eval.average_last': self.patience + 1,
              'train.num_steps': self.max_steps or config.train.num_steps}
    if self.kind == 'tokens':
      return {'train.num_steps': max(1, self.tokens // config.data.tokens_per_batch)}
    if self.kind == 'flops':
      per_step = 6 * count_params(config) * config.data.tokens_per_batch
      return {'train.num_steps': max(1, int(self.flops // per_step))}
    raise UserError(f'unknown budget kind {self.kind!r}: use one of {", ".join(BUDGET_KINDS)}')

  def describe(self) -> str:
    if self.kind == 'plateau':
      return (f'until the validation loss has not improved for {self.patience} evaluations '
              f'{self.eval_every_steps} steps apart (at most {self.max_steps or "num_steps"} '
              f'steps); the last {self.patience + 1} checkpoints averaged')
    if self.kind == 'tokens':
      return f'{self.tokens:,} target slots per member'
    if self.kind == 'flops':
      return f'{self.flops:.3g} training FLOPs per member (6 x parameters x target slots)'
    return 'a fixed number of steps (train.num_steps)'


@dataclasses.dataclass(frozen=True)
class Curves:
  """Rows drawn as lines against a numeric setting, one panel per group of metrics, written
  beside the bar chart as report_<name>.png (e.g. a metric against d_k, scaled and unscaled).

  Attributes:
    name: the figure's name (report_<name>.png; [A-Za-z0-9_.-]).
    x_label: what the x axis shows, e.g. 'd_k (4 heads)'.
    series: {line label: [(x, row name), ...]}: one line per label through those rows.
    panels: groups of metrics, one panel each; the metrics of a panel share its axes, told apart
      by the line style (e.g. ('init_attention_entropy', 'attention_entropy')).
    log_x: a base-2 logarithmic x axis.
  """
  name: str
  x_label: str
  series: Mapping[str, Sequence[Tuple[float, str]]]
  panels: Sequence[Sequence[str]]
  log_x: bool = True


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A base experiment, its rows and seeds.

  Attributes:
    experiment: the base experiment file, optionally with a variant ('experiments/multi30k.py:x').
    rows: the rows; `baseline` names the one every other is compared with.
    baseline: the name of the baseline row.
    seeds: default seeds of every row (each seed sets train.seed and data.shuffle_seed).
    common: overrides applied to every row first (e.g. a smaller budget).
    metric: the report's main metric (the bar chart's), e.g. 'bleu_tok_lc' or 'accuracy'.
    extra_metrics: more columns for the report, from the evaluation JSON or the training log
      ('grad_norm_start', 'grad_norm_end': the first and last logged gradient norm).
    curves: line figures of the report (Curves), beside its bar chart.
    compare: more (reference row, row) pairs to test besides every row against the baseline,
      e.g. [('scaled_dk16', 'unscaled_dk16')].
    data_seeds: () ties the data order to the seed (data.shuffle_seed = train.seed); given,
      every seed is crossed with every data seed, so initialisation/dropout and data order
      vary on their own (members `<row>_seed<k>_data<j>`).
    budget: how long members train (Budget).
    note: a paragraph for the report's header (e.g. what the budget measures).
  """
  experiment: str
  rows: Sequence[Row]
  baseline: str
  seeds: Sequence[int] = (0, 1)
  common: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  metric: str = 'bleu_tok_lc'
  extra_metrics: Sequence[str] = ()
  curves: Sequence[Curves] = ()
  compare: Sequence[Tuple[str, str]] = ()
  data_seeds: Sequence[int] = ()
  budget: Budget = Budget()
  note: str = ''

  def row(self, name: str) -> Row:
    return next(r for r in self.rows if r.name == name)

  def members(self) -> List['Member']:
    """Every (row, seed[, data seed]) in a fixed order: rows, seeds, data seeds as listed."""
    combos = [(row, tune, seed, data_seed) for row in self.rows
              for tune in (range(len(row.tune_settings())) if row.tune else (None,))
              for seed in (row.seeds or self.seeds) for data_seed in (self.data_seeds or (None,))]
    return [Member(index, row, seed, data_seed, tune)
            for index, (row, tune, seed, data_seed) in enumerate(combos)]

  def comparisons(self) -> List[Tuple[str, str]]:
    """(reference, row) pairs the report tests: every row against the baseline, then
    `compare`."""
    pairs = [(self.baseline, r.name) for r in self.rows if r.name != self.baseline]
    return pairs + [tuple(p) for p in self.compare if tuple(p) not in pairs]


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep: a row with one seed (and a data-order seed, when they are split)."""
  index: int
  row: Row
  seed: int
  data_seed: Optional[int] = None
  tune: Optional[int] = None

  @property
  def name(self) -> str:
    tune = '' if self.tune is None else f'_t{self.tune}'
    tail = '' if self.data_seed is None else f'_data{self.data_seed}'
    return f'{self.row.name}{tune}_seed{self.seed}{tail}'

  def tune_overrides(self) -> Dict[str, Any]:
    return {} if self.tune is None else self.row.tune_settings()[self.tune]


def overrides_digest(overrides: Mapping[str, Any]) -> str:
  """A short digest of a member's overrides (its identity besides its name)."""
  text = json.dumps(overrides, sort_keys=True, default=str)
  return hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]


def flag_value(value: Any) -> str:
  """A Python value as ml_collections' config flags parse it back."""
  if isinstance(value, (list, tuple)):
    return '(' + ','.join(flag_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  if isinstance(value, float) and value == int(value) and math.isfinite(value):
    return repr(value)
  return str(value)
