"""The discriminator on the latent shared by the adversarial variants (factor_vae, aae), and its objective.

Not a variant (the leading underscore keeps it out of discovery): the two variants register the same
`adversary.*` keys from here, so their defaults cannot drift apart.

The discriminator is an MLP z (B, d) -> logits (B, 2), leaky-ReLU (slope 0.2) hidden layers; class 0 is
"a sample of the target distribution" (FactorVAE: the joint q(z); AAE: the prior p(z)), class 1 "a
sample of the other one" (FactorVAE: the product of marginals, by permute_dims; AAE: the codes). It is
a head of the network (params['params']['heads_discriminator']) with its own Adam
(`base.Adversary`), so it is vmapped over members, checkpointed and resumed with the model.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxae import validation
from jaxae.variants import base

HEAD = "discriminator"
NEGATIVE_SLOPE = 0.2  # FactorVAE's discriminator is leaky-ReLU (Kim & Mnih 2018, appendix); 0.2 as in its reference code

# Shared keys (same defaults in every adversarial variant). Paper values: FactorVAE's discriminator has
# 6 hidden layers of 1000 leaky-ReLU units, Adam lr 1e-4, b1 0.5, b2 0.9 (Kim & Mnih 2018, appendix); the
# AAE's on MNIST 2 layers of 1000 ReLU units (Makhzani et al. 2016). The default (512, 512) keeps the
# discriminator cheaper than the 784-512-256 autoencoder on CPU; `--config.adversary.hidden=(1000,)*6`
# gives the paper's.
OPTIONS = {"adversary.hidden": (512, 512), "adversary.learning_rate": 1e-4, "adversary.b1": 0.5,
           "adversary.b2": 0.9}


class Discriminator(nn.Module):
  """z (B, ...) float32 -> logits (B, 2): `hidden` Dense + leaky-ReLU(0.2) layers, then Dense(2)."""

  hidden: Sequence[int] = (512, 512)

  @nn.compact
  def __call__(self, z, train: bool = False):
    h = z.reshape(z.shape[0], -1)
    for width in self.hidden:
      h = nn.leaky_relu(nn.Dense(width)(h), NEGATIVE_SLOPE)
    return nn.Dense(2)(h)


def heads(config) -> dict:
  return {HEAD: Discriminator(tuple(config.adversary.hidden))}


def optimizer(config) -> optax.GradientTransformation:
  """Adam(adversary.learning_rate, adversary.b1, adversary.b2) of the discriminator's parameters."""
  a = config.adversary
  return optax.adam(a.learning_rate, b1=a.b1, b2=a.b2)


ADVERSARY = base.Adversary(heads=(HEAD,), optimizer=optimizer)


def validate(config) -> None:
  """ConfigError (one line) for an adversary.* value the discriminator or its Adam cannot use."""
  hidden = config.adversary.hidden
  if not isinstance(hidden, (tuple, list)) or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                                                      for w in hidden):
    raise validation.ConfigError(f"adversary.hidden={hidden!r} must be a tuple of positive integers")
  lr = config.adversary.learning_rate
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
    raise validation.ConfigError(f"adversary.learning_rate={lr!r} must be a positive number")
  for key in ("b1", "b2"):
    b = config.adversary[key]
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1:
      raise validation.ConfigError(f"adversary.{key}={b!r} must be in [0, 1)")


def permute_dims(key, z):
  """Each latent dimension permuted independently across the batch (Kim & Mnih 2018, alg. 1).

  z (B, d) -> (B, d): column j is z[pi_j, j] for an independent uniform permutation pi_j of the B rows,
  so the rows are samples of the product of the batch's marginals, prod_j q(z_j).
  """
  order = jnp.argsort(jax.random.uniform(key, z.shape), axis=0)  # a uniform permutation per column
  return jnp.take_along_axis(z, order, axis=0)


def discriminator_terms(real_logits, fake_logits):
  """(loss, accuracy): the discriminator's cross-entropy, nats, and its classification accuracy.

  real_logits (B1, 2) on samples of class 0, fake_logits (B2, 2) on samples of class 1.
  loss = 0.5 (E_real[-log D(z)] + E_fake[-log(1 - D(z))]) with D(z) = softmax(logits)_0, the negated
  objective of Kim & Mnih 2018, alg. 2 (Goodfellow et al. 2014, eq. 1); accuracy is the mean of the
  two classes' accuracies (0.5 for a discriminator that cannot tell them apart).
  """
  loss = 0.5 * (jnp.mean(-jax.nn.log_softmax(real_logits)[:, 0]) + jnp.mean(-jax.nn.log_softmax(fake_logits)[:, 1]))
  accuracy = 0.5 * (jnp.mean((real_logits[:, 0] > real_logits[:, 1]).astype(jnp.float32))
                    + jnp.mean((fake_logits[:, 1] >= fake_logits[:, 0]).astype(jnp.float32)))
  return loss, accuracy
