"""Hyperparameter grids: which members share one compiled program, and what each member trains with.

A run's members are (setting, seed) pairs. Settings differ only in sweepable scalars
(configs.sweepable: the optimizer's and the variant's `hparams`), carried as per-member arrays, so the whole grid x seeds is one leading axis of
one vmapped program. Keys that change shapes or code (latent size, widths, k, batch size, variant)
cannot share a program: each of their combinations is a separate *group*, compiled on its own, in
the same invocation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from jaxae import configs


@dataclasses.dataclass(frozen=True)
class Group:
  """One compiled program: `config` (static values applied) and its vmappable settings."""

  name: str  # '' when the sweep has no static key; else e.g. 'model.latent_dim=2'
  config: Any
  settings: tuple[dict, ...]  # one {dotted key: value} per setting ({} when nothing is swept)
  static: dict = dataclasses.field(default_factory=dict)  # the static sweep values of this group

  @property
  def seeds(self) -> list[int]:
    return [self.config.seed + i for i in range(self.config.num_seeds)]

  @property
  def members(self) -> list[tuple[int, int]]:
    """(setting index, seed) of each member, setting-major: member = setting * num_seeds + seed index."""
    return [(g, s) for g in range(len(self.settings)) for s in self.seeds]


def _grid(sweep: dict[str, list]) -> list[dict]:
  keys = list(sweep)
  return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def dynamic_keys(config, sweep: dict[str, list]) -> list[str]:
  """The swept keys that members of one program can differ in: sweepable for every variant in the sweep.

  Raises ConfigError for a key that is another variant's hyperparameter but not one of this variant's
  (sweeping it would train identical members).
  """
  from jaxae import variants

  per_variant = [configs.sweepable(configs.with_values(config, {"variant": name}))
                 for name in sweep.get("variant", [config.variant])]
  others = {key for v in variants.all_variants() for key in v.hparams.values()}
  dynamic = []
  for key in sweep:
    used = [key in keys for keys in per_variant]
    if all(used):
      dynamic.append(key)
    elif key in others and not any(used):
      raise configs.ConfigError(f"sweep key {key!r} has no effect on variant {config.variant!r}: it is a "
                                f"hyperparameter of {', '.join(v.name for v in variants.all_variants() if key in v.hparams.values())}")
  return dynamic


def groups(config) -> list[Group]:
  """Splits `config.sweep` into compiled groups. Raises ConfigError for a bad sweep or a bad swept value.

  Every setting of the grid is validated like a base config before anything runs.
  """
  sweep = configs.parse_sweep(config)
  dyn = dynamic_keys(config, sweep)
  dynamic = {k: v for k, v in sweep.items() if k in dyn}
  static = {k: v for k, v in sweep.items() if k not in dyn}
  for key, values in dynamic.items():
    for v in values:
      if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise configs.ConfigError(f"sweep[{key!r}] value {v!r} must be a number (the key is swept in one program)")
  size = lambda d: math.prod(len(v) for v in d.values())
  if size(sweep) > configs.MAX_MEMBERS or size(dynamic) * config.num_seeds > configs.MAX_MEMBERS:
    raise configs.ConfigError(f"the sweep has {size(sweep)} settings, {size(dynamic) * config.num_seeds} members "
                              f"with num_seeds={config.num_seeds} in one program: at most {configs.MAX_MEMBERS}")
  settings = tuple(_grid(dynamic)) if dynamic else ({},)
  out = []
  for values in (_grid(static) if static else [{}]):
    group_config = configs.with_values(config, values)
    configs.validate(group_config)
    for setting in settings:
      if setting:
        try:
          configs.validate(configs.with_values(group_config, setting))
        except configs.ConfigError as e:
          raise configs.ConfigError(f"sweep setting {setting}: {e}") from None
    name = ",".join(f"{k}={v}" for k, v in values.items())
    out.append(Group(name, group_config, settings, values))
  return out


def member_hparams(group: Group) -> dict[str, np.ndarray]:
  """{hparam name: float32 (num_members,)}: the group's sweepable scalars (configs.sweepable), per member."""
  out = {}
  for key, name in configs.sweepable(group.config).items():
    base = configs.get(group.config, key)
    out[name] = np.asarray([float(group.settings[g].get(key, base)) for g, _ in group.members], np.float32)
  return out


def points(results: list[tuple[Group, dict]], split: str = "eval") -> list[tuple[dict, dict]]:
  """[(full setting {key: value} incl. static keys, {metric: (mean, std)})] over every group's settings.

  `results` pairs each group with its summary (report.summarize). Diverged seeds are already excluded.
  """
  out = []
  for group, summary in results:
    for entry in summary["settings"]:
      setting = {**group.static, **entry["setting"]}
      metrics = {k: (v["mean"], v["std"]) for k, v in entry[split].items()}
      out.append((setting, metrics))
  return out
