"""Regularized autoencoders, RAE (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders",
eq. 11): a deterministic autoencoder whose decoder is kept smooth explicitly instead of by noise.

    L = ||x - D(E(x))||^2 + beta * 1/2 ||z||^2 + lambda * L_REG,       z = E(x)

per example, averaged over the batch. ||x - D(E(x))||^2 is summed over the elements of an example (eq.
11; with `loss.reconstruction='bce'` the Bernoulli cross-entropy in nats per example instead); D(z) is
the reconstruction mean `net.mean(logits)`. beta = `loss.rae_embedding_weight`, lambda =
`loss.rae_reg_weight`, the decoder regularizer `loss.rae_regularizer`:

  'l2'  RAE-L2, Tikhonov: L_REG = ||theta_D||^2, the sum of squares of every kernel (weight matrix,
        convolution filter) of the decoder, biases excluded: a bias shifts the decoder's output but
        does not change its slope, which is what the penalty is for (the decoder's Lipschitz constant
        is bounded by the product of its kernels' norms). The authors' code likewise puts a Keras
        l2 kernel_regularizer on decoder kernels only (it leaves out the first dense layer; here the
        whole decoder, as the paper's theta). Leaves named 'kernel' under params['params']['decoder'].
  'gp'  RAE-GP, the decoder's gradient penalty: L_REG = ||J_D(z)||_F^2, the squared Frobenius norm of
        the Jacobian of the decoder's output with respect to its input at z = E(x), per example (the
        paper's ||grad D(E(x))||^2 read literally: the gradient of the vector-valued decoder is its
        Jacobian). Computed exactly, d forward-mode products (jax.linearize, then the d unit tangents).
        The authors' Keras code penalizes instead mean_{i,j} (d/dz_j sum_pixels D(z_i)^2)^2, the gradient of
        the squared output (it weighs the slope by the output's size); pythae's RAE_GP penalizes the
        gradient of sum(D(E(x))) with respect to the input x, through encoder and decoder. Neither is
        the decoder's smoothness alone, so the literal form is used.

Defaults (the authors' MNIST configurations, configurations/config.py of their code, and pythae's
RAE_L2 / RAE_GP): beta = 1e-4, lambda = 1e-7 (their RAE-L2; their RAE-GP used 0.5e-7), 'l2'.

No prior: `jaxae.evaluate` samples a 10-component Gaussian mixture fitted to training codes (the
paper's ex-post density estimation, sec. 4; `evaluate.fit_code_density`).

Metrics: `loss`, `recon_cost` (the summed reconstruction term), `recon_mse` (per element),
`embedding_penalty` (mean 1/2 ||z||^2), and `decoder_l2` or `decoder_gp` (L_REG, unweighted).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxae import validation
from jaxae.variants import base, wae

REGULARIZERS = ("l2", "gp")


def decoder_kernel_sq_norm(params):
  """||theta_D||^2: the float32 sum of squares of the leaves named 'kernel' under params['params']['decoder']."""
  leaves = jax.tree_util.tree_leaves_with_path(params["params"]["decoder"])
  kernels = [leaf for path, leaf in leaves if getattr(path[-1], "key", None) == "kernel"]
  return sum((jnp.sum(jnp.square(k)) for k in kernels), jnp.zeros([], jnp.float32))


def jacobian_frobenius_sq(decode, z):
  """mean_i ||d decode(z)_i / d z_i||_F^2: the squared Frobenius norm of each example's decoder Jacobian.

  decode: (B, *latent) -> (B, *out), each example's output depending only on its own code (true of
  the built-in networks); z (B, *latent). Exact: one linearization, then one Jacobian-vector product
  per latent unit (batched), i.e. d forward-mode passes. Returns a float32 scalar.
  """
  b = z.shape[0]
  units = z[0].size
  _, jvp = jax.linearize(decode, z)
  basis = jnp.eye(units, dtype=z.dtype).reshape(units, 1, *z.shape[1:])
  columns = jax.vmap(lambda e: jvp(jnp.broadcast_to(e, z.shape)))(basis)  # (units, B, *out): column j of every J_i
  return jnp.sum(jnp.square(columns)) / b


def make_loss(config, net):
  recon = wae.summed_reconstruction(config, net)
  kind = config.loss.rae_regularizer

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    z, logits = base.autoencode(net, params, x, key, train)
    cost, metrics = recon(logits, x)
    embedding = jnp.mean(0.5 * jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=-1))
    if kind == "l2":
      reg = decoder_kernel_sq_norm(params)
    else:
      reg = jacobian_frobenius_sq(lambda v: net.mean(net.decode(params, v, key, train)), z)
    loss = cost + hp["rae_embedding_weight"] * embedding + hp["rae_reg_weight"] * reg
    return loss, {**metrics, "recon_cost": cost, "embedding_penalty": embedding, f"decoder_{kind}": reg, "loss": loss}

  return loss_fn


def validate(config) -> None:
  if config.loss.rae_regularizer not in REGULARIZERS:
    raise validation.ConfigError(f"loss.rae_regularizer={config.loss.rae_regularizer!r} is not one of "
                              f"{', '.join(map(repr, REGULARIZERS))}")


VARIANT = base.register(base.Variant(
    name="rae", make_loss=make_loss, validate=validate,
    hparams={"rae_embedding_weight": "loss.rae_embedding_weight", "rae_reg_weight": "loss.rae_reg_weight"},
    options={"loss.rae_embedding_weight": 1e-4, "loss.rae_reg_weight": 1e-7, "loss.rae_regularizer": "l2"},
    description="regularized autoencoder: reconstruction + beta/2 ||z||^2 + lambda * (decoder L2 or gradient penalty)"))
