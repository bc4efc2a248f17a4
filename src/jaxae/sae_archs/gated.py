"""Gated SAEs (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders",
sec. 3, eqs. 6-10): `sae.activation='gated'`.

Which latents fire and how strongly are estimated by two paths sharing one matrix:

    pi_gate = (x - b_dec) W_enc + b_gate                          the gate (eq. 6, W_gate = W_enc)
    pi_mag  = (x - b_dec) (W_enc * exp(r_mag)) + b_mag            the magnitudes (eq. 7 with eq. 9:
                                                                  (W_mag)_ij = exp((r_mag)_j) (W_gate)_ij)
    z       = 1[pi_gate > 0] * ReLU(pi_mag)                       the code (eq. 8), x_hat = z W_dec + b_dec

and the loss (eq. 10) is

    ||x - x_hat||^2 + lambda sum_i ReLU(pi_gate)_i ||W_dec,i|| + ||x - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2

with lambda = `sae.l1_coefficient` (sweepable) and sg the stop-gradient: the sparsity penalty and the
auxiliary reconstruction train the gate (the step 1[.] passes no gradient), the auxiliary term through a
frozen copy of the decoder (the paper's x_hat_frozen). The L1 is weighted by the decoder norms as in
SAELens's GatedTrainingSAE (1 for the default unit-norm decoder, where it is the paper's ||ReLU(pi_gate)||_1).
Shapes: W_enc (D, m), b_gate, r_mag, b_mag (m,), W_dec (m, D), b_dec (D,): SAELens's names and layouts
(sae_lens/saes/gated_sae.py), exported as its architecture 'gated'. There is no b_enc. Initialization:
b_gate = r_mag = b_mag = 0 (SAELens's _init_weights_gated), W_enc = W_dec^T.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxae import sae, sae_archs


def params(module, d: int, m: int) -> dict:
  del d
  return {name: module.param(name, nn.initializers.zeros_init(), (m,)) for name in ("b_gate", "r_mag", "b_mag")}


def pre_activations(p: dict, x):
  """(pi_gate, pi_mag), each (B, m) float32, of x (B, D) (eqs. 6, 7, 9)."""
  centred = x - p["b_dec"]
  return centred @ p["W_enc"] + p["b_gate"], centred @ (p["W_enc"] * jnp.exp(p["r_mag"])) + p["b_mag"]


def code(pi_gate, pi_mag):
  """z = 1[pi_gate > 0] * ReLU(pi_mag) (eq. 8), (B, m)."""
  return (pi_gate > 0) * jax.nn.relu(pi_mag)


def infer_code(p: dict, x, k: int):
  del k
  return code(*pre_activations(p, x))


def make_terms(config, m: int):
  del config, m

  def terms(p, hp, x, train):
    del train
    pi_gate, pi_mag = pre_activations(p, x)
    gate = jax.nn.relu(pi_gate)
    l1 = jnp.mean(jnp.sum(gate * sae.decoder_norms(p), axis=-1))
    frozen = jax.lax.stop_gradient({"W_dec": p["W_dec"], "b_dec": p["b_dec"]})
    aux = jnp.mean(jnp.sum(jnp.square(x - sae.decode(frozen, gate)), axis=-1))
    return sae_archs.Terms(z=code(pi_gate, pi_mag), pi=pi_gate, penalty=hp["l1_coefficient"] * l1 + aux,
                           metrics={"l1": l1, "gated_aux_loss": aux})

  return terms


def saelens_state(p: dict) -> dict:
  return {k: np.ascontiguousarray(p[k], np.float32) for k in ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")}


ARCH = sae_archs.register(sae_archs.Architecture(
    name="gated", params=params, infer_code=infer_code, make_terms=make_terms, saelens_architecture="gated",
    saelens_state=saelens_state, b_enc=False,
    description="gated SAE: a gate and a magnitude path sharing W_enc, L1 on the gate + frozen-decoder aux loss"))
