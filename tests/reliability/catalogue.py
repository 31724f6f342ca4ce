"""The catalogue of bad inputs: what a careful user might get wrong, and the words the one
`error:` line must say. Each entry runs launch.py once (see runner.py); most fail before
jax is imported, in well under a second.

Sections: flags and experiment files; out-of-range settings; settings that cannot work
together; workdirs; runs that exist (resume, eval, translate, sample); data files; damaged
checkpoints; several processes. More cases live beside this file, one module per topic
(cases_*.py, each with its own CASES), and are added at the end.
"""
import fcntl
import gzip
import os
import pathlib
import shutil

from tests.reliability.runner import Case

SMOKE = '--experiment=experiments/copy_task.py:smoke'
M30K = '--experiment=experiments/multi30k.py:smoke'
SST2 = '--experiment=experiments/sst2_classifier.py:smoke'
T3_MINI = '--sweep=experiments/ablations/table3.py:mini'
RAW = '--experiment.data.raw_dir={tmp}/raw'
LANGS = ('de', 'en', 'fr')
SPLIT_FILES = ('train', 'val', 'test_2016_flickr')


# --- set-ups ------------------------------------------------------------------------------

def experiment_file(text: str):
  def setup(tmp, workdir):
    (tmp / 'exp.py').write_text(text)
  return setup


def write_multi30k(folder: pathlib.Path, lines: int = 40) -> None:
  """Small well-formed Multi30k raw files (all splits, all three languages)."""
  folder.mkdir(parents=True, exist_ok=True)
  words = {'en': 'a dog runs in the park', 'de': 'ein hund läuft im park',
           'fr': 'un chien court dans le parc'}
  for split in SPLIT_FILES:
    for lang in LANGS:
      text = ''.join(f'{words[lang]} {i}\n' for i in range(lines))
      with gzip.open(folder / f'{split}.{lang}.gz', 'wt', encoding='utf-8') as f:
        f.write(text)


def multi30k_with(name: str, content: bytes, compress: bool = True):
  """Small raw files with `name` replaced by `content` (gzipped unless compress=False)."""
  def setup(tmp, workdir):
    write_multi30k(tmp / 'raw')
    path = tmp / 'raw' / name
    path.write_bytes(gzip.compress(content) if compress else content)
  return setup


def multi30k_without(name: str):
  def setup(tmp, workdir):
    write_multi30k(tmp / 'raw')
    (tmp / 'raw' / name).unlink()
  return setup


def sst2_with(train: bytes):
  def setup(tmp, workdir):
    folder = tmp / 'raw'
    folder.mkdir()
    dev = b'text\tlabel\n' + b''.join(b'a fine film %d\t1\n' % i for i in range(20))
    (folder / 'dev.tsv.gz').write_bytes(gzip.compress(dev))
    (folder / 'train.tsv.gz').write_bytes(gzip.compress(train))
  return setup


def a_file_at(relative: str, text: str = 'not a folder\n'):
  def setup(tmp, workdir):
    path = tmp / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return setup


def write_workdir_file(name: str, content: bytes):
  def setup(tmp, workdir):
    (workdir / name).write_bytes(content)
  return setup


def hold_training_lock(tmp, workdir):
  """Another training holds the workdir: this test process takes the lock and keeps it."""
  fd = os.open(workdir / 'train.lock', os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  os.write(fd, b'pid 4242 on trainer-host\n')
  HELD_LOCKS.append(fd)          # released by the test after the run


HELD_LOCKS = []


def without_config(tmp, workdir):
  (workdir / 'config.json').unlink()


def array_files(workdir: pathlib.Path, step: int):
  """The array data files of one checkpoint step, largest first."""
  folder = workdir / 'checkpoints' / str(step)
  files = [p for p in folder.rglob('*') if p.is_file() and '/d/' in str(p)]
  return sorted(files, key=lambda p: -p.stat().st_size)


def truncate_arrays(step: int):
  def setup(tmp, workdir):
    for path in array_files(workdir, step):
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  return setup


def emptied_checkpoints(tmp, workdir):
  for step in os.listdir(workdir / 'checkpoints'):
    shutil.rmtree(workdir / 'checkpoints' / step / 'state')


def immutable(tmp, workdir):
  """A workdir the user cannot write (chattr +i works for root too); undone by the test."""
  if os.system(f'chattr +i {workdir} 2>/dev/null') != 0:
    raise NotImplementedError('chattr +i is not available here')
  IMMUTABLE.append(workdir)


IMMUTABLE = []

NOT_UTF8 = 'caf\xe9 au lait\n'.encode('latin-1')


def _range(name, key, value, expect=None, base=SMOKE, **kwargs):
  return Case(name, [base, f'--experiment.{key}={value}'], expect or f'{key}=', **kwargs)


CASES = [
    # --- flags and experiment files --------------------------------------------------------
    Case('unknown_experiment', ['--experiment=experiments/no_such.py'], 'unknown experiment file'),
    Case('experiment_syntax_error', ['--experiment={tmp}/exp.py'], 'syntax error at line 1',
         setup=experiment_file('def get_config(:\n  pass\n')),
    Case('experiment_name_error', ['--experiment={tmp}/exp.py'], "NameError: name 'nope'",
         setup=experiment_file('def get_config(arg=None):\n  return nope\n')),
    Case('experiment_without_get_config', ['--experiment={tmp}/exp.py'], 'has no get_config()',
         setup=experiment_file('X = 1\n')),
    Case('unknown_variant', ['--experiment=experiments/copy_task.py:nope'], "unknown variant 'nope'"),
    Case('misspelled_key', [SMOKE, '--experiment.model.num_layerz=3'], 'did you mean num_layers'),
    Case('unknown_section', [SMOKE, '--experiment.nosuch.field=1'], 'unknown config key'),
    Case('int_given_text', [SMOKE, '--experiment.train.num_steps=two'], "invalid literal for int()"),
    Case('int_given_float', [SMOKE, '--experiment.train.seed=1.5'], "invalid literal for int()"),
    Case('bool_given_text', [SMOKE, '--experiment.data.pack=maybe'], 'data.pack'),
    Case('unknown_flag', [SMOKE, '--nosuchflag=1'], 'nosuchflag'),
    Case('unknown_mode', [SMOKE, '--mode=nope'], '--mode'),
    Case('extra_argument', [SMOKE, 'extra'], "unexpected argument 'extra'"),
    Case('empty_workdir_flag', [SMOKE, '--workdir='], '--workdir is empty'),
    Case('negative_step', [SMOKE, '--mode=eval', '--step=-1'], '--step=-1 is negative',
         workdir='run'),

    # --- out-of-range settings ---------------------------------------------------------------
    _range('num_steps_zero', 'train.num_steps', 0),
    _range('num_steps_negative', 'train.num_steps', -5),
    _range('steps_per_loop_zero', 'train.steps_per_loop', 0),
    _range('prefetch_depth_negative', 'train.prefetch_depth', -1),
    _range('learning_rate_negative', 'optim.learning_rate', -0.001),
    _range('learning_rate_nan', 'optim.learning_rate', 'nan', 'not a finite number'),
    _range('learning_rate_inf', 'optim.learning_rate', 'inf', 'not a finite number'),
    _range('dropout_above_one', 'model.dropout_rate', 1.5),
    _range('dropout_negative', 'model.dropout_rate', -0.1),
    _range('attention_dropout_one', 'model.attention_dropout_rate', 1.0),
    _range('label_smoothing_one', 'train.label_smoothing', 1.0),
    _range('keep_checkpoints_zero', 'train.keep_checkpoints', 0, 'would delete every checkpoint'),
    _range('keep_checkpoints_negative', 'train.keep_checkpoints', -1),
    _range('checkpoint_every_zero', 'train.checkpoint_every_steps', 0),
    _range('log_every_zero', 'train.log_every_steps', 0),
    _range('eval_every_zero', 'train.eval_every_steps', 0),
    _range('tokens_per_batch_negative', 'data.tokens_per_batch', -4096),
    _range('data_max_len_zero', 'data.max_len', 0),
    _range('data_vocab_size_negative', 'data.vocab_size', -5),
    _range('num_heads_zero', 'model.num_heads', 0),
    _range('model_dim_zero', 'model.model_dim', 0),
    _range('num_layers_zero', 'model.num_layers', 0),
    _range('mlp_dim_negative', 'model.mlp_dim', -1),
    _range('model_max_len_zero', 'model.max_len', 0),
    _range('model_vocab_size_negative', 'model.vocab_size', -1),
    _range('head_dim_zero', 'model.head_dim', 0),
    _range('warmup_negative', 'optim.warmup_steps', -10),
    _range('adam_b2_one', 'optim.b2', 1.0),
    _range('adam_eps_zero', 'optim.eps', 0.0),
    _range('weight_decay_negative', 'optim.weight_decay', -0.1),
    _range('grad_clip_negative', 'optim.grad_clip_norm', -1.0),
    _range('grad_accum_zero', 'optim.grad_accum_steps', 0),
    _range('beam_size_zero_in_training', 'decode.beam_size', 0),
    _range('max_extra_len_negative', 'decode.max_extra_len', -1),
    _range('decode_method_unknown', 'decode.method', 'nope', "decode.method='nope'"),
    _range('temperature_zero', 'decode.temperature', 0.0),
    _range('top_p_zero', 'decode.top_p', 0.0),
    _range('top_k_negative', 'decode.top_k', -1),
    _range('alpha_negative', 'decode.alpha', -0.5),
    _range('average_last_zero', 'eval.average_last', 0),
    _range('max_batches_negative', 'eval.max_batches', -1),
    _range('eval_split_unknown', 'eval.split', 'dev', "eval.split='dev'"),
    _range('copy_vocab_too_small', 'data.copy_vocab_size', 3),
    _range('positional_unknown', 'model.positional', 'spiral', "positional='spiral'"),
    _range('norm_order_unknown', 'model.norm_order', 'middle', "norm_order='middle'"),
    _range('activation_unknown', 'model.activation', 'tanh', "activation='tanh'"),
    _range('dtype_unknown', 'model.dtype', 'float64', "dtype='float64'"),
    _range('float16_without_loss_scaling', 'model.dtype', 'float16', 'without loss scaling'),
    _range('family_unknown', 'model.family', 'gpt', 'model.family'),
    _range('schedule_unknown', 'optim.schedule', 'nope', 'optim.schedule'),
    _range('optimizer_unknown', 'optim.optimizer', 'nope', 'optim.optimizer'),
    _range('parallelism_unknown', 'train.parallelism', 'nope', 'train.parallelism'),
    _range('dataset_unknown', 'data.dataset', 'nope', 'unknown dataset'),

    # --- settings that cannot work together --------------------------------------------------
    Case('heads_do_not_divide_model_dim', [SMOKE, '--experiment.model.num_heads=3'],
         'not divisible by num_heads=3'),
    Case('copy_lengths_not_a_range', [SMOKE, '--experiment.data.copy_min_len=9',
                                      '--experiment.data.copy_max_len=4'], 'not a range'),
    Case('model_vocab_below_copy_vocab', [SMOKE, '--experiment.model.vocab_size=16'],
         "smaller than the tokenizer's 32"),
    Case('rows_not_divisible_by_devices', [SMOKE, '--experiment.data.tokens_per_batch=128'],
         'batch_multiple=8'),
    Case('rsqrt_without_warmup', [SMOKE, '--experiment.optim.warmup_steps=0'],
         'needs warmup_steps > 0'),
    Case('average_last_above_keep', [SMOKE, '--experiment.eval.average_last=6'],
         'averages more checkpoints than train.keep_checkpoints'),
    Case('init_embeddings_missing', [SMOKE, '--experiment.train.init_embeddings={tmp}/none.txt'],
         'init_embeddings'),
    Case('profile_steps_past_num_steps', [SMOKE, '--experiment.train.profile_steps=1:9'],
         "train.profile_steps='1:9' traces to step 9, past train.num_steps=2"),
    Case('profile_steps_not_a_window', [SMOKE, '--experiment.train.profile_steps=5-9'],
         "train.profile_steps='5-9' is not a step window"),
    Case('data_max_len_above_model_max_len', [SMOKE, '--experiment.data.max_len=80'],
         'model.max_len'),
    Case('num_steps_not_a_multiple_of_accumulation',
         [SMOKE, '--experiment.optim.grad_accum_steps=3', '--experiment.train.num_steps=10'],
         'grad_accum_steps=3'),
    Case('rotary_odd_head_dim', [SMOKE, '--experiment.model.positional=rotary',
                                 '--experiment.model.head_dim=7'], 'even head_dim'),

    # --- workdirs ----------------------------------------------------------------------------
    Case('workdir_is_a_file', [SMOKE], 'is a file, not a folder', workdir='file'),
    Case('workdir_below_a_file', [SMOKE, '--workdir={tmp}/afile/run'], 'lies below the file',
         setup=a_file_at('afile')),
    Case('workdir_not_writable', [SMOKE], 'is not writable', setup=immutable),
    Case('eval_on_unwritable_run', [SMOKE, '--mode=eval'], 'is not writable', workdir='run',
         setup=immutable),
    Case('corrupt_config_json', [SMOKE], 'is not a readable JSON config', workdir='run',
         setup=write_workdir_file('config.json', b'{"model": {"model_dim": 16,')),
    Case('config_json_not_a_dict', [SMOKE], 'not a config', workdir='run',
         setup=write_workdir_file('config.json', b'[1, 2, 3]\n')),
    Case('checkpoints_without_config', [SMOKE], 'was not made by this launcher', workdir='run',
         setup=without_config),
    Case('resume_with_other_seed', [SMOKE, '--experiment.train.seed=7'], 'train.seed: 0 -> 7',
         workdir='run'),
    Case('resume_with_other_model', [SMOKE, '--experiment.model.model_dim=32'],
         'model.model_dim: 16 -> 32', workdir='run'),
    Case('resume_below_saved_step', [SMOKE, '--experiment.train.num_steps=1'],
         'is below step 2', workdir='run'),
    Case('second_training_same_workdir', [SMOKE, '--experiment.train.num_steps=4'],
         'is being trained by pid 4242 on trainer-host', workdir='run', setup=hold_training_lock),

    # --- eval / translate / sample on runs ---------------------------------------------------
    Case('eval_without_run', [SMOKE, '--mode=eval'], 'no config.json'),
    Case('eval_absent_workdir', [SMOKE, '--mode=eval'], 'no config.json', workdir='absent'),
    Case('translate_absent_workdir', [SMOKE, '--mode=translate'], 'no config.json',
         workdir='absent', stdin='5 6 7\n'),
    Case('sample_absent_workdir', ['--experiment=experiments/multi30k_lm.py:smoke', '--mode=sample'],
         'no config.json', workdir='absent'),
    Case('eval_with_other_experiment', [M30K, '--mode=eval'], 'holds a run with another config',
         workdir='run'),
    Case('eval_missing_step', [SMOKE, '--mode=eval', '--step=999'], 'no checkpoint step 999',
         workdir='run'),
    Case('eval_average_more_than_saved', [SMOKE, '--mode=eval', '--experiment.eval.average_last=3',
                                          '--experiment.train.keep_checkpoints=3'],
         'eval.average_last=3', workdir='run'),
    Case('eval_beam_size_zero', [SMOKE, '--mode=eval', '--experiment.decode.beam_size=0'],
         'decode.beam_size=0', workdir='run'),
    Case('translate_beam_size_zero', [SMOKE, '--mode=translate', '--experiment.decode.beam_size=0'],
         'decode.beam_size=0', workdir='run', stdin='5 6 7\n'),
    Case('translate_text_on_copy_task', [SMOKE, '--mode=translate'], 'token ids', workdir='run',
         stdin='A dog runs.\n'),
    Case('translate_input_missing', [SMOKE, '--mode=translate', '--input={tmp}/none.txt'],
         'does not exist', workdir='run'),
    Case('translate_input_is_folder', [SMOKE, '--mode=translate', '--input={tmp}'], 'is a folder',
         workdir='run'),
    Case('translate_input_not_utf8', [SMOKE, '--mode=translate', '--input={tmp}/in.txt'], 'UTF-8',
         workdir='run', setup=lambda tmp, workdir: (tmp / 'in.txt').write_bytes(NOT_UTF8)),
    Case('translate_stdin_not_utf8', [SMOKE, '--mode=translate'], 'UTF-8', workdir='run',
         stdin=NOT_UTF8),
    Case('sample_on_translation_run', [SMOKE, '--mode=sample'], 'needs a language model',
         workdir='run'),

    # --- data files --------------------------------------------------------------------------
    Case('raw_dir_missing', [M30K, '--experiment.data.raw_dir={tmp}/none'], 'no Multi30k files'),
    Case('raw_dir_is_a_file', [M30K, RAW], 'raw', setup=a_file_at('raw')),
    Case('raw_file_missing', [M30K, RAW], 'val.de.gz', setup=multi30k_without('val.de.gz')),
    Case('train_file_empty', [M30K, RAW], 'train.en.gz', setup=multi30k_with('train.en.gz', b'')),
    Case('gz_not_gzip', [M30K, RAW], 'train.de.gz',
         setup=multi30k_with('train.de.gz', b'plain text\n', compress=False)),
    Case('raw_file_not_utf8', [M30K, RAW], 'UTF-8', setup=multi30k_with('val.en.gz', NOT_UTF8 * 40)),
    Case('raw_line_counts_differ', [M30K, RAW], 'val',
         setup=multi30k_with('val.de.gz', b'ein hund\n' * 7)),
    Case('vocab_too_big_for_data', [M30K, RAW], 'vocab_size=300 is too big',
         setup=lambda tmp, workdir: write_multi30k(tmp / 'raw')),
    Case('every_pair_longer_than_max_len', [M30K, '--experiment.data.max_len=2'],
         'longer than max_len=2', needs_shared_data=True),
    Case('data_dir_is_a_file', [M30K, '--experiment.data.data_dir={tmp}/tfds'], 'data.data_dir',
         setup=a_file_at('tfds')),
    Case('wmt14_not_prepared', ['--experiment=experiments/wmt14.py:base',
                                '--experiment.data.data_dir={tmp}/tfds'],
         'wmt14_translate/de-en is not prepared'),
    Case('sst2_train_only_header', [SST2, RAW], 'train.tsv.gz', setup=sst2_with(b'text\tlabel\n')),
    Case('sst2_bad_label', [SST2, RAW], 'label',
         setup=sst2_with(b'text\tlabel\ngood film\t7\n' * 3)),
    Case('sst2_row_without_tab', [SST2, RAW], 'train.tsv.gz',
         setup=sst2_with(b'text\tlabel\na row with no tab\n' * 3)),

    # --- damaged checkpoints (read-only modes must fail cleanly, not move anything) ----------
    Case('eval_damaged_explicit_step', [SMOKE, '--mode=eval', '--step=2'], 'checkpoint step 2',
         workdir='run', setup=truncate_arrays(2)),
    Case('eval_all_checkpoints_damaged', [SMOKE, '--mode=eval'], 'readable checkpoint',
         workdir='run', setup=emptied_checkpoints),

    # --- sweeps: flags that would be ignored are errors -------------------------------------
    Case('sweep_not_a_sweep_file', ['--sweep=experiments/copy_task.py'], 'defines no get_sweep()'),
    Case('sweep_with_experiment_file', [T3_MINI, SMOKE], '--experiment does not go with --sweep'),
    Case('sweep_with_a_run_flag', [T3_MINI, '--input=in.txt'], '--input does not apply'),
    Case('sweep_member_and_parallel', [T3_MINI, '--sweep_member=1', '--sweep_parallel=2'],
         'do not go together'),
    Case('sweep_unknown_override', [T3_MINI, '--experiment.train.bogus=1'], 'train.bogus'),
    Case('sweep_override_out_of_range', [T3_MINI, '--experiment.train.num_steps=-3'],
         'num_steps'),
    Case('sweep_flag_without_sweep', [SMOKE, '--sweep_parallel=2'], '--sweep_parallel needs --sweep'),

    # --- several processes ------------------------------------------------------------------
    Case('multihost_without_coordinator', [SMOKE, '--multihost'], '--coordinator_address'),
    Case('multihost_nobody_joins', [SMOKE, '--multihost', '--coordinator_address=127.0.0.1:1',
                                    '--num_processes=2', '--process_id=0',
                                    '--multihost_timeout=3'], 'within 3 s'),
    Case('multihost_timeout_zero', [SMOKE, '--multihost', '--multihost_timeout=0'],
         '--multihost_timeout=0'),
]

# Topics kept in their own modules (each defines CASES).
from tests.reliability import cases_checkpoints  # pylint: disable=wrong-import-position
from tests.reliability import cases_cli  # pylint: disable=wrong-import-position
from tests.reliability import cases_export  # pylint: disable=wrong-import-position
from tests.reliability import cases_integrity  # pylint: disable=wrong-import-position
from tests.reliability import cases_sweeps  # pylint: disable=wrong-import-position

CASES += (cases_checkpoints.CASES + cases_cli.CASES + cases_export.CASES +
          cases_integrity.CASES + cases_sweeps.CASES)
