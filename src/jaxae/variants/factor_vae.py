"""FactorVAE (Kim & Mnih 2018, "Disentangling by factorising"): a VAE with a total-correlation penalty.

Model objective (eq. 2), nats per example, minimized:

  -ELBO + gamma * TC(z),   TC(z) = KL(q(z) || prod_j q(z_j)) ~ E_q(z)[log D(z) / (1 - D(z))]

with -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) (one reparameterized sample, the KL in closed form,
the decoder likelihood of `loss.reconstruction`, `base.decoder_log_likelihood`) and gamma =
`loss.factor_gamma`. The total correlation is the density-ratio trick: a discriminator D (z (B, d) ->
2 logits, `_adversarial.Discriminator`) trained to tell samples of q(z) from samples of prod_j q(z_j)
gives log D(z) - log(1 - D(z)) = logit_0(z) - logit_1(z), averaged over the batch's z ~ q(z|x).

Discriminator objective (alg. 2): cross-entropy, real = codes z ~ q(z|x) of the first half of the batch,
fake = `permute_dims` (alg. 1: each latent dimension permuted independently across the batch) of the
codes of the second half, as the paper's second batch x' (pythae's split); the -ELBO and the TC estimate
use the whole batch. A batch of one is both halves.

One loss, one gradient: the variant's loss is (model objective) + (discriminator's cross-entropy). The
model's terms read D through its parameters under `jax.lax.stop_gradient`, D's term reads the codes
under `stop_gradient`, so each part's gradient is that of its own objective (see `base.Adversary`).
The discriminator's parameters (params['params']['heads_discriminator']) are updated by their own Adam
(`adversary.learning_rate` 1e-4, `adversary.b1` 0.5, `adversary.b2` 0.9, the paper's), the rest by the
run's optimizer: the paper's alternating updates made simultaneous.

gamma: the paper tunes it per data set (values from a few to a few tens on dSprites and 3D Shapes) and
gives none for MNIST; the default 10 is of that order (`configs/factor_vae.py`). Default discriminator: 2 x 512 (the paper's 6 x 1000 is
`--config.adversary.hidden=(1000,1000,1000,1000,1000,1000)`).

Metrics: loss (model objective + discriminator loss), neg_elbo, recon_nll, kl, tc_estimate (nats),
disc_loss (nats), disc_accuracy (mean of the real and permuted classes' accuracies; 0.5 = no
dependence found), active_units, recon_mse. `jaxae.evaluate` gives the importance-sampled -log p(x)
(p(z) = N(0, I), `base.standard_normal_model`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxae.variants import _adversarial, base

REPARAMETERIZATION_SALT = base.REPARAMETERIZATION_SALT  # the sample's key: fold_in(step key, 7)
PERMUTATION_SALT = 11  # permute_dims' key: fold_in(step key, 11)


def make_loss(config, net):
  log_likelihood = base.decoder_log_likelihood(config, net)
  disc = _adversarial.HEAD

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    out = base.gaussian_autoencode(net, log_likelihood, params, hp, x, key, train)
    z, nll = out["z"], out["nll"]
    kl = out["kl"]
    # The model's TC estimate sees a fixed discriminator: gradients reach the encoder through z only.
    d_z = net.head(jax.lax.stop_gradient(params), disc, z, key, train)
    tc = jnp.mean(d_z[:, 0] - d_z[:, 1])
    model_loss = nll + kl + hp["factor_gamma"] * tc
    # The discriminator sees fixed codes: its cross-entropy trains only its own parameters.
    codes = jax.lax.stop_gradient(z)
    half = max(codes.shape[0] // 2, 1)
    real = net.head(params, disc, codes[:half], key, train)
    fake = net.head(params, disc, _adversarial.permute_dims(jax.random.fold_in(key, PERMUTATION_SALT),
                                                            codes[codes.shape[0] - half:]), key, train)
    d_loss, d_acc = _adversarial.discriminator_terms(real, fake)
    loss = model_loss + d_loss
    # Active units (Burda et al. 2016, sec. 5.2): Var_x(E_q[z_j | x]) > 0.01, here over the batch.
    active = out["active_units"]
    return loss, {"recon_nll": nll, "kl": kl, "neg_elbo": nll + kl, "tc_estimate": tc, "disc_loss": d_loss,
                  "disc_accuracy": d_acc, "active_units": active, "recon_mse": out["recon_mse"],
                  "loss": loss}

  return loss_fn


def heads(config) -> dict:
  return {**base.likelihood_heads(config), **_adversarial.heads(config)}


VARIANT = base.register(base.Variant(
    name="factor_vae", make_loss=make_loss, encoder="gaussian", headline="neg_elbo", heads=heads,
    hparams={"factor_gamma": "loss.factor_gamma", "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.factor_gamma": 10.0, "loss.gaussian_sigma": 1.0, **_adversarial.OPTIONS},
    validate=_adversarial.validate, latent_model=base.standard_normal_model, adversary=_adversarial.ADVERSARY,
    description="FactorVAE: -ELBO + gamma * total correlation estimated by a latent discriminator"))
