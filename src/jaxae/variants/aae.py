"""Adversarial autoencoder (Makhzani et al. 2016, "Adversarial Autoencoders", sec. 2).

A deterministic encoder z = f(x) (B, d) and a decoder; the aggregated posterior q(z) of the codes is
matched to the prior p(z) = N(0, I) by a GAN on the latent (Goodfellow et al. 2014, eq. 1):

  discriminator  D(z) = softmax(logits(z))_0 separates prior samples (class 0) from codes (class 1):
                 0.5 (E_p(z)[-log D(z)] + E_x[-log(1 - D(f(x)))]), nats (`_adversarial.discriminator_terms`)
  model          reconstruction + aae_weight * E_x[-log D(f(x))], the encoder (the generator) fooling a
                 fixed D with the non-saturating loss (Goodfellow et al. 2014, sec. 3)

The reconstruction is the shared term of `loss.reconstruction` (`base.reconstruction`: Bernoulli
cross-entropy in nats per example for 'bce', per-element MSE for 'mse'); `loss.aae_weight` weights the
regularization phase. The paper alternates a reconstruction phase and a regularization phase (sec. 2);
here both phases are one simultaneous update: the variant's loss is (model objective) + (discriminator
loss), the model reading D's parameters under `jax.lax.stop_gradient` and D reading the codes under
`stop_gradient`, D updated by its own Adam (`adversary.*`, see `base.Adversary`), the autoencoder by
the run's optimizer. Prior samples: one N(0, I) draw per code, from fold_in(step key, PRIOR_SALT).

`Variant.code_prior` is N(0, I), so `jaxae.evaluate` decodes prior samples.

Metrics: loss (model objective + discriminator loss), recon_mse (and recon_bce for 'bce'),
adversarial_loss (E[-log D(f(x))], nats), disc_loss (nats), disc_accuracy (mean of the prior and code
classes' accuracies; 0.5 = the codes pass for prior samples), code_mean_sq (mean over units of the
batch mean of z_j^2, 1 under the prior).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxae.variants import _adversarial, base

PRIOR_SALT = 13  # the prior samples' key: fold_in(step key, 13)


def sample_prior(key, shape):
  """z ~ N(0, I) of `shape`, float32: the prior the codes are matched to."""
  return jax.random.normal(key, shape, jnp.float32)


def make_loss(config, net):
  recon = base.reconstruction(config, net)
  disc = _adversarial.HEAD

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    z, logits = base.autoencode(net, params, x, key, train)
    rec, metrics = recon(logits, x)
    # Regularization phase, generator side: the encoder fools a fixed discriminator (gradients through z only).
    fooled = net.head(jax.lax.stop_gradient(params), disc, z, key, train)
    adversarial = jnp.mean(-jax.nn.log_softmax(fooled)[:, 0])
    model_loss = rec + hp["aae_weight"] * adversarial
    # Discriminator side: prior samples against fixed codes.
    codes = jax.lax.stop_gradient(z)
    real = net.head(params, disc, sample_prior(jax.random.fold_in(key, PRIOR_SALT), codes.shape), key, train)
    fake = net.head(params, disc, codes, key, train)
    d_loss, d_acc = _adversarial.discriminator_terms(real, fake)
    loss = model_loss + d_loss
    flat = codes.reshape(codes.shape[0], -1)
    return loss, {**metrics, "adversarial_loss": adversarial, "disc_loss": d_loss, "disc_accuracy": d_acc,
                  "code_mean_sq": jnp.mean(jnp.square(flat)), "loss": loss}

  return loss_fn


VARIANT = base.register(base.Variant(
    name="aae", make_loss=make_loss, heads=_adversarial.heads, hparams={"aae_weight": "loss.aae_weight"},
    options={"loss.aae_weight": 1.0, **_adversarial.OPTIONS}, validate=_adversarial.validate,
    code_prior=lambda config: sample_prior, adversary=_adversarial.ADVERSARY,
    description="adversarial autoencoder: reconstruction + a latent GAN matching the codes to N(0, I)"))
