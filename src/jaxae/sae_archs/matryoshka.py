"""Matryoshka BatchTopK SAEs (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka Sparse
Autoencoders", sec. 3): `sae.activation='matryoshka_batchtopk'`.

The code is BatchTopK's (Bussmann et al. 2024: the k * B largest entries of ReLU(pi) over the batch), and
the dictionary is trained so that every prefix of it reconstructs on its own: with the nested sizes
m_1 < m_2 < ... < m_n = m (`sae.matryoshka_widths`, cumulative, as SAELens's
MatryoshkaBatchTopKTrainingSAE.matryoshka_widths; m is appended when the last is smaller), the loss is

    sum_{i=1..n} ||x - (z_{1:m_i} W_dec[1:m_i] + b_dec)||^2  +  auxk_coefficient * L_aux

(their eq. 2 written with BatchTopK's AuxK term): the outermost level is the whole SAE's reconstruction
error, the inner ones reuse the same code truncated to its first m_i latents, so early latents learn
general features and later ones specialize them. Inference is BatchTopK's: ReLU(pi) * 1[pi > theta] with
the global threshold theta estimated during training (`sae.threshold_lr`); exported as SAELens saves its
Matryoshka SAEs, architecture 'jumprelu' with every threshold at theta. Parameters: W_enc, b_enc, W_dec,
b_dec, threshold (), as batchtopk's. Metrics: `sq_error_<m_i>` for each inner level.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxae import sae, sae_archs, validation


def params(module, d: int, m: int) -> dict:
  del d, m
  return {"threshold": module.param("threshold", nn.initializers.zeros_init(), ())}


def infer_code(p: dict, x, k: int):
  del k
  pi = sae.pre_activation(p, x)
  return jax.nn.relu(pi) * (pi > p["threshold"])


def levels(config, m: int) -> tuple[int, ...]:
  """The nested dictionary sizes m_1 < ... < m_n = m: `sae.matryoshka_widths`, with m appended if missing."""
  widths = tuple(int(w) for w in config.sae.matryoshka_widths)
  return widths if widths and widths[-1] == m else (*widths, m)


def level_errors(p: dict, x, z, widths) -> list:
  """||x - (z_{1:w} W_dec[1:w] + b_dec)||^2, the mean over the batch, for each prefix size w."""
  return [jnp.mean(jnp.sum(jnp.square(x - (z[:, :w] @ p["W_dec"][:w] + p["b_dec"])), axis=-1)) for w in widths]


def make_terms(config, m: int):
  k = int(config.sae.k)
  inner = levels(config, m)[:-1]  # the outermost level is the shared objective's ||x - x_hat||^2

  def terms(p, hp, x, train):
    del hp
    pi = sae.pre_activation(p, x)
    if train:
      z, min_positive = sae.batch_topk(pi, k)
    else:
      z, min_positive = jax.nn.relu(pi) * (pi > p["threshold"]), None
    errors = level_errors(p, x, z, inner)
    metrics = {f"sq_error_{w}": e for w, e in zip(inner, errors)}
    metrics["threshold"] = p["threshold"]
    return sae_archs.Terms(z=z, pi=pi, penalty=sum(errors, jnp.zeros((), jnp.float32)), metrics=metrics,
                           min_positive=min_positive)

  return terms


def saelens_state(p: dict) -> dict:
  state = {k: np.ascontiguousarray(p[k], np.float32) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
  state["threshold"] = np.full(state["b_enc"].shape, float(p["threshold"]), np.float32)
  return state


def validate(config) -> None:
  widths = config.sae.matryoshka_widths
  if config.sae.activation != "matryoshka_batchtopk":
    return
  ok = isinstance(widths, (tuple, list)) and len(widths) > 0 and all(
      isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)
  if not ok or any(a >= b for a, b in zip(widths, widths[1:])):
    raise validation.ConfigError(
        f"sae.matryoshka_widths={widths!r} must be the nested dictionary sizes, strictly increasing positive "
        f"integers (the last at most the width m = model.expansion x D), e.g. '(64, 256, 1024)'")


def check(config, m: int) -> None:
  from jaxae import data as data_lib

  if int(config.sae.k) > m:
    raise data_lib.DataError(f"sae.k={config.sae.k} is larger than the {m} latents")
  widths = tuple(config.sae.matryoshka_widths)
  if widths and widths[-1] > m:
    raise data_lib.DataError(f"sae.matryoshka_widths={widths!r}: the largest level is more than the {m} latents "
                             f"(model.expansion={config.model.expansion} x D={m // int(config.model.expansion)})")


ARCH = sae_archs.register(sae_archs.Architecture(
    name="matryoshka_batchtopk", params=params, infer_code=infer_code, make_terms=make_terms,
    saelens_architecture="jumprelu", saelens_state=saelens_state, auxk=True, estimates_threshold=True,
    options={"sae.matryoshka_widths": ()}, check=check, validate=validate,
    description="BatchTopK codes trained to reconstruct from every nested prefix of the dictionary"))
