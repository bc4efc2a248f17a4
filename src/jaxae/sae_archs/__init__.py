"""SAE architectures beyond the four built into `jaxae.sae` (relu, topk, batchtopk, jumprelu), one file each.

An architecture is an `Architecture` record registered by its `sae.activation` name (`register`, `get`);
`jaxae.sae.SparseAutoencoder` asks it for its parameters and inference code, the objective in
`jaxae/variants/sae.py` for its training code and extra loss terms, and `jaxae.export` for its SAELens
tensors. The built-in ones (each file gives its source):

  gated                 Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
                        Autoencoders" (jaxae/sae_archs/gated.py)
  matryoshka_batchtopk  Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka Sparse
                        Autoencoders" (jaxae/sae_archs/matryoshka.py)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple


class Terms(NamedTuple):
  """What an architecture's training objective gives the shared SAE objective for one batch.

  z             the code (B, m) float32 the reconstruction x_hat = z W_dec + b_dec is decoded from
  pi            pre-activations (B, m) the AuxK term selects dead latents' values from (when `auxk`)
  penalty       a float32 scalar added to the reconstruction error ||x - x_hat||^2 (sparsity penalties,
                auxiliary reconstructions), everything but AuxK
  metrics       {name: float32 scalar} reported per member (the terms of `penalty`)
  min_positive  a scalar estimate of a global inference threshold (BatchTopK's smallest kept
                activation) when `estimates_threshold`, else None
  """
  z: Any
  pi: Any
  penalty: Any
  metrics: dict
  min_positive: Any = None


@dataclasses.dataclass(frozen=True)
class Architecture:
  """One SAE architecture.

  name                 its `sae.activation` value
  params               (module, d, m) -> {name: parameter}: called inside the flax module's setup to declare
                       the parameters beside W_enc, W_dec, b_dec (and b_enc when `b_enc`)
  infer_code           (p, x (B, D), k) -> z (B, m): the deterministic code at inference
  make_terms           (config, m) -> ((p, hp, x (B, D), train) -> Terms): the training objective's own part
  saelens_architecture the `architecture` of SAELens's cfg.json its export is loaded as
  saelens_state        one member's folded numpy arrays -> SAELens's state dict {name: float32 array}
  b_enc                whether the SAE has the encoder bias b_enc (gated SAEs have b_gate and b_mag instead)
  auxk                 whether the AuxK loss of the topk activations (Gao et al. 2024, A.2) is added
  estimates_threshold  whether a `threshold` parameter follows the EMA of Terms.min_positive (BatchTopK)
  options              {dotted config key: default} the architecture adds to variant 'sae'
  check                (config, m) -> None: raises data.DataError for settings the width m cannot take
  validate             config -> None: raises validation.ConfigError for its own keys
  description          one line
  """
  name: str
  params: Callable[..., dict]
  infer_code: Callable[..., Any]
  make_terms: Callable[..., Callable[..., Terms]]
  saelens_architecture: str
  saelens_state: Callable[[dict], dict]
  b_enc: bool = True
  auxk: bool = False
  estimates_threshold: bool = False
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  check: Callable[[Any, int], None] = lambda config, m: None
  validate: Callable[[Any], None] = lambda config: None
  description: str = ""


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
  """Adds `arch` under its name; a name taken by a built-in activation or another architecture is a ValueError."""
  from jaxae import sae

  if arch.name in sae.ACTIVATIONS or arch.name in ARCHITECTURES:
    raise ValueError(f"SAE architecture {arch.name!r} is already registered")
  ARCHITECTURES[arch.name] = arch
  return arch


def get(name: str) -> Architecture | None:
  """The registered architecture `name`, or None (a built-in activation of jaxae.sae, or unknown)."""
  return ARCHITECTURES.get(name)


def options() -> dict:
  """The config keys every registered architecture adds, with their defaults."""
  return {k: v for arch in ARCHITECTURES.values() for k, v in arch.options.items()}


from jaxae.sae_archs import gated, matryoshka  # noqa: E402,F401  (register the built-in architectures)
