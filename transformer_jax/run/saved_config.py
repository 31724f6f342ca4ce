"""A trained run's config read back from its workdir, and any config as readable text.

workdir.py stores the experiment's config in `<workdir>/config.json` when a run starts.
JSON keeps the values but not all the types: tuples come back as lists, and a typed
placeholder (`config_dict.placeholder(int)`, an Optional field left unset) comes back as a
bare null. `from_saved` restores both, so the config of a run is the ConfigDict its
experiment file built: overrides such as `--experiment.model.head_dim=8` or
`--experiment.data.bucket_lengths='(8, 16)'` parse against it exactly as against the file.
This lets eval/translate/sample (and any later mode that reads a run) need only --workdir.
Links between fields (`get_ref`, e.g. word2vec's data.word2vec_mode -> model.mode) come back
as plain values: they tie pinned settings, which cannot change after training anyway.

`describe` writes a config one field a line, `section.field = value  # type`, for
`launch.py --print_config`. Nothing here imports jax.
"""
import typing
from typing import Any, Dict, Mapping, Optional

import ml_collections
from ml_collections import config_dict

from transformer_jax.base import workdir as workdir_lib
from transformer_jax.models import families


def from_saved(saved: Mapping[str, Any],
               reference: Optional[ml_collections.ConfigDict] = None) -> ml_collections.ConfigDict:
  """The locked ConfigDict of a run, from the content of its config.json.

  Args:
    saved: the parsed config.json (workdir.load_config), {section: {field: value}}.
    reference: a config of the same layout (launch.py passes transformer_jax/run/defaults.py's)
      whose field types stand in for what JSON lost; the `model` section takes its types
      from its family's config dataclass instead. Fields it lacks keep their JSON type,
      and an unset one of unknown type accepts any literal. A field of the reference that
      the run predates gets the reference's value when it is not pinned (workdir.PINNED),
      e.g. a later eval.* switch; a pinned one stays missing, as the run was trained.

  Returns:
    The config with tuples as tuples and every null a placeholder of its field's type.
  """
  sections = {}
  for section, fields in saved.items():
    if isinstance(fields, Mapping):
      types = _field_types(section, fields, reference)
      sections[section] = {name: _typed(value, types.get(name)) for name, value in fields.items()}
      sections[section].update(_later_fields(section, fields, reference))
    else:
      sections[section] = _typed(fields, None)
  config = ml_collections.ConfigDict(sections)
  config.lock()
  return config


def _field_types(section: str, fields: Mapping[str, Any], reference) -> Dict[str, type]:
  """{field: type} for one section: the model family's dataclass, else the reference."""
  if section == 'model':
    try:
      config_class = families.get(fields.get('family', 'transformer')).config_class()
    except ValueError:      # an unknown family: validation.py names it later
      return {}
    hints = typing.get_type_hints(config_class)
    return {name: _optional_inner(hint) for name, hint in hints.items()}
  if reference is None or section not in reference or not hasattr(reference[section], 'keys'):
    return {}
  known = reference[section]
  return {name: known.get_type(name) for name in known.keys()}


def _later_fields(section: str, fields: Mapping[str, Any], reference) -> Dict[str, Any]:
  """The reference's unpinned fields of `section` that the run's config.json lacks."""
  if section == 'model' or reference is None or section not in reference:
    return {}
  known = reference[section]
  if not hasattr(known, 'keys'):
    return {}
  return {name: known[name] if known[name] is not None else
          config_dict.placeholder(known.get_type(name))
          for name in known.keys()
          if name not in fields and not is_pinned(f'{section}.{name}')}


def is_pinned(key: str) -> bool:
  """Whether 'section.field' must stay as the run was trained (workdir.PINNED)."""
  return any(key == p or key.startswith(p + '.') for p in workdir_lib.PINNED)


def _optional_inner(hint) -> type:
  """int for Optional[int]; the origin for generics (tuple for Tuple[int, ...])."""
  if typing.get_origin(hint) is typing.Union:
    hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
  return typing.get_origin(hint) or hint


def _typed(value: Any, field_type: Optional[type]) -> Any:
  if value is None:
    usable = isinstance(field_type, type) and field_type is not type(None)
    return config_dict.placeholder(field_type if usable else object)
  if isinstance(value, list):
    return tuple(_typed(item, None) for item in value)
  if field_type is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)      # 1.0 written by another JSON writer as 1
  return value


def _type_name(section, name: str) -> str:
  field_type = section.get_type(name)
  label = getattr(field_type, '__name__', str(field_type))
  return f'{label} or None' if section[name] is None else label


def field_names(config: ml_collections.ConfigDict) -> str:
  """'model: activation, ...; data: ...': the fields of each section, for --helpfull."""
  return '; '.join(f'{name}: {", ".join(sorted(section.keys()))}'
                   for name, section in sorted(config.items()) if hasattr(section, 'keys'))


def describe(config: ml_collections.ConfigDict) -> str:
  """Every field of `config`, one `section.field = value  # type` line each, sorted."""
  lines = []
  for section_name in sorted(config.keys()):
    section = config[section_name]
    if not isinstance(section, ml_collections.ConfigDict):
      lines.append(f'{section_name} = {section!r}  # {type(section).__name__}')
      continue
    for name in sorted(section.keys()):
      lines.append(f'{section_name}.{name} = {section[name]!r}  # {_type_name(section, name)}')
  return '\n'.join(lines)
