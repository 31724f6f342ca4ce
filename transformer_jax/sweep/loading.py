"""From a sweep file to checked member configs: `load` runs a sweep file's get_sweep() and checks
every row's overrides against the base config exactly as `--experiment.x.y=v` would be checked
(unknown key, wrong type, out of range), so a mistake in any row stops the sweep before
anything runs; `member_overrides` and `resolved_config` give what each member runs with.
Nothing here imports jax.
"""
import importlib.util
import os
from typing import Any, Dict, Mapping, Sequence

from transformer_jax.base.errors import UserError
from transformer_jax.base import paths
from transformer_jax.run import overrides as cli_config
from transformer_jax.sweep import spec
from transformer_jax.train import validation


def member_overrides(sweep: spec.Sweep, member: spec.Member) -> Dict[str, Any]:
  """The overrides of one member on top of the base experiment: common, the budget's, the
  row's (with its width-scaled learning rate), then its seeds."""
  overrides = {**sweep.common, **member.row.overrides, **member.tune_overrides()}
  if sweep.budget.kind != 'steps' or member.row.scale_lr_with_width:
    config = config_with(sweep.experiment, overrides, member.row.name)
    overrides = {**sweep.common, **sweep.budget.overrides(config), **member.row.overrides,
                 **member.tune_overrides()}
    if member.row.scale_lr_with_width:
      overrides['optim.learning_rate'] = width_scaled_lr(sweep, config)
  data_seed = member.seed if member.data_seed is None else member.data_seed
  return {**overrides, 'train.seed': member.seed, 'data.shuffle_seed': data_seed}


def width_scaled_lr(sweep: spec.Sweep, config) -> float:
  """The baseline's peak learning rate times (d_model of the baseline / d_model of the row)
  ** 0.5: the paper's d_model^-0.5 rule applied to a row whose learning rate is set."""
  base = config_with(sweep.experiment, {**sweep.common, **sweep.row(sweep.baseline).overrides},
                     sweep.baseline)
  if base.optim.learning_rate is None:
    raise UserError('scale_lr_with_width: the baseline has no optim.learning_rate (the '
                    'paper\'s rule already scales it with d_model): drop scale_lr_with_width')
  return float(base.optim.learning_rate * (base.model.model_dim / config.model.model_dim) ** 0.5)


def config_with(experiment: str, overrides: Mapping[str, Any], row: str):
  """The base config with `overrides` set (unchecked: `check` checks every member)."""
  config = base_config(experiment)
  for key, value in overrides.items():
    section, _, field = key.partition('.')
    try:
      config[section][field] = value
    except (KeyError, AttributeError, TypeError, ValueError):
      raise UserError(f'row {row!r}: {key}={value!r} is not a field of {experiment} with that '
                      'type: use a key of its get_config() (see transformer_jax/run/defaults.py)'
                      ) from None
  return config


def load(path_and_variant: str, extra: Sequence[str] = ()) -> spec.Sweep:
  """Reads a sweep file (`path[:variant]`) and checks every member's config, with the command
  line's `--experiment.<key>=<value>` overrides `extra` on top; UserError if not."""
  path, _, variant = paths.resolve_experiment(path_and_variant).partition(':')
  if not os.path.isfile(path):
    raise UserError(f'unknown sweep file {path!r}: give a file defining get_sweep(), e.g. '
                    'experiments/ablations/table3.py')
  try:
    sweep = _run_file(path, 'get_sweep', variant)
  except UserError:
    raise
  except (Exception, SystemExit) as e:  # pylint: disable=broad-except  (the user's file)
    raise UserError(f'{path_and_variant}: {type(e).__name__}: {e}: fix the sweep file') from None
  if not isinstance(sweep, spec.Sweep):
    raise UserError(f'{path_and_variant}: get_sweep() returned {type(sweep).__name__}, not a '
                    'Sweep: return transformer_jax.sweep.Sweep(experiment=..., rows=[...], '
                    'baseline=...)')
  check(sweep, path_and_variant, extra)
  return sweep


def base_config(experiment: str):
  path, _, variant = paths.resolve_experiment(experiment).partition(':')
  if not os.path.isfile(path):
    raise UserError(f'the sweep\'s experiment {path!r} does not exist: give an experiment file '
                    'such as experiments/multi30k.py')
  return _run_file(path, 'get_config', variant)


def _run_file(path: str, function: str, variant: str):
  """Loads the Python file `path` and returns `<function>(variant or None)`."""
  module_spec = importlib.util.spec_from_file_location('_sweep_loaded', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not callable(getattr(module, function, None)):
    kind = ('a sweep file, such as experiments/ablations/table3.py' if function == 'get_sweep'
            else 'an experiment file, such as experiments/multi30k.py')
    raise UserError(f'{path} defines no {function}(): give {kind}')
  return getattr(module, function)(variant or None)


def resolved_config(sweep: spec.Sweep, member: spec.Member, extra: Sequence[str] = ()):
  """The base config with the member's overrides, checked like command-line overrides, then
  the command line's own (`extra`, as the member's launch.py applies them after the row's)."""
  config = base_config(sweep.experiment)
  config.lock()
  for key, value in member_overrides(sweep, member).items():
    section, _, field = key.partition('.')
    where = f'row {member.row.name!r}: {key}={value!r}'
    if section not in config or not field or field not in config[section]:
      raise UserError(f'{where} is not a field of {sweep.experiment}: use a key of its '
                      'get_config() (see transformer_jax/run/defaults.py)')
    try:
      config[section][field] = value
    except (TypeError, ValueError) as e:
      raise UserError(f'{where} has the wrong type ({e}): give a value of the field\'s type') from None
  config = cli_config.apply_overrides(config, list(extra))
  try:
    validation.check_config(config)
  except UserError as e:
    given = ' with the command line\'s --experiment overrides' if extra else ''
    raise UserError(f'row {member.row.name!r}{given}: {e}') from None
  return config


def check(sweep: spec.Sweep, where: str, extra: Sequence[str] = ()) -> None:
  """Names, baseline, seeds and every member's config (with `extra`), before anything runs."""
  names = [row.name for row in sweep.rows]
  for name in names:
    if not spec.NAME.match(name):
      raise UserError(f'{where}: row name {name!r} must be letters, digits, _ . - (it names '
                      'folders): rename the row')
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise UserError(f'{where}: rows {duplicates} appear twice: give every row its own name')
  if sweep.baseline not in names:
    raise UserError(f'{where}: the baseline {sweep.baseline!r} is not a row: set baseline to '
                    f'one of {names}')
  _check_curves(sweep, where, names)
  for row in sweep.rows:
    seeds = list(row.seeds or sweep.seeds)
    if not seeds:
      raise UserError(f'{where}: row {row.name!r} has no seeds: give it seeds or the sweep seeds')
    if len(set(seeds)) < len(seeds):
      raise UserError(f'{where}: row {row.name!r} repeats a seed ({seeds}): give distinct seeds')
  if len(set(sweep.data_seeds)) < len(sweep.data_seeds):
    raise UserError(f'{where}: data_seeds {list(sweep.data_seeds)} repeat a seed: give '
                    'distinct data seeds')
  for pair in sweep.compare:
    if len(pair) != 2 or not set(pair) <= set(names) or pair[0] == pair[1]:
      raise UserError(f'{where}: compare entry {pair!r} must be two different rows of '
                      f'{names}: fix Sweep(compare=...)')
  if sweep.budget.kind not in spec.BUDGET_KINDS:
    raise UserError(f'{where}: unknown budget kind {sweep.budget.kind!r}: use one of '
                    f'{", ".join(spec.BUDGET_KINDS)}')
  if sweep.budget.kind in ('tokens', 'flops') and getattr(sweep.budget, sweep.budget.kind) <= 0:
    raise UserError(f'{where}: a {sweep.budget.kind} budget needs '
                    f'Budget({sweep.budget.kind}=N) with N > 0')
  for member in sweep.members():
    resolved_config(sweep, member, extra)


def _check_curves(sweep: spec.Sweep, where: str, names: Sequence[str]) -> None:
  known = {sweep.metric, *sweep.extra_metrics, *spec.METRICS}
  for curves in sweep.curves:
    if not spec.NAME.match(curves.name):
      raise UserError(f'{where}: curves name {curves.name!r} must be letters, digits, _ . - '
                      '(it names a file): rename it')
    missing = sorted({row for points in curves.series.values() for _, row in points} - set(names))
    if missing:
      raise UserError(f'{where}: curves {curves.name!r} draw rows {missing} that the sweep does '
                      f'not have: use rows of {list(names)}')
    unknown = sorted({m for panel in curves.panels for m in panel} - known)
    if unknown or not curves.panels or not all(curves.panels):
      raise UserError(f'{where}: curves {curves.name!r} need non-empty panels of reported metrics'
                      f'{f", not {unknown}" if unknown else ""}: add them to extra_metrics or '
                      f'use one of {sorted(known)}')
