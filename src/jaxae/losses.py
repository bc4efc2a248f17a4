"""Pure loss functions of the autoencoder literature.

Every function is jit-, grad- and vmap-safe, takes float32 arrays, and returns a float32 scalar
(averaged over the batch) unless stated. Per-example quantities are summed over pixels/latent units
("nats per example") where the name says so, and averaged over pixels where it says "per pixel".
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def mse(reconstruction, target):
  """Mean squared error per pixel: mean over every axis of (reconstruction - target)^2.

  Shapes: any, equal. Matches torch.nn.MSELoss(reduction='mean'), the reference protocol's loss.
  """
  return jnp.mean(jnp.square(reconstruction - target))


def bce_with_logits(logits, target):
  """Binary cross-entropy from logits, per example (summed over pixels), averaged over the batch.

  logits, target: (B, ...), target in [0, 1]. Returns nats per example. Uses the stable form
  max(l, 0) - l*t + log(1 + exp(-|l|)), exact for any finite logit (no sigmoid is evaluated).
  """
  per_pixel = jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return jnp.mean(jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=-1))


def gaussian_nll(mean, target, sigma):
  """-log N(target | mean, sigma^2 I) per example in nats, averaged over the batch.

  mean, target: (B, ...); sigma: scalar > 0 (the decoder's fixed standard deviation).
  = 0.5 * sum((t - m)^2) / sigma^2 + 0.5 * D * log(2 pi sigma^2), D pixels per example.
  """
  sq = jnp.sum(jnp.square(target - mean).reshape(mean.shape[0], -1), axis=-1)
  d = mean[0].size
  return jnp.mean(0.5 * sq / sigma**2 + 0.5 * d * jnp.log(2 * jnp.pi * sigma**2))


def gaussian_log_prob(mean, target, log_sigma):
  """log N(target | mean, sigma^2 I) per example in nats, (B, ...) -> (B,), normalizing constant included.

  log_sigma: the log standard deviation, a scalar or an array broadcasting against one example (...).
  = sum over elements of -(t - m)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2.
  """
  per = (-0.5 * jnp.square(target - mean) * jnp.exp(-2.0 * log_sigma) - log_sigma
         - 0.5 * jnp.log(2 * jnp.pi))
  return jnp.sum(per.reshape(per.shape[0], -1), axis=-1)


# Below these |logit| the continuous Bernoulli's normalizer and mean are their Taylor series in the logit:
# the closed forms are 0/0 at logit 0 and cancel catastrophically nearby (value and gradient). The first
# terms left out, 2.1e-6 l^10 and 5.3e-10 l^11, are below 3e-9 there; float32 rounding of the closed
# forms above them stays within a few ulps.
_CB_NORM_TAYLOR = 0.5
_CB_MEAN_TAYLOR = 1.0


def continuous_bernoulli_log_norm(logits):
  """log C(lambda) of the continuous Bernoulli, elementwise from logits l (lambda = sigmoid(l)), nats.

  Loaiza-Ganem & Cunningham 2019, "The continuous Bernoulli: fixing a pervasive error in variational
  autoencoders", eq. 7: C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda), and 2 at lambda = 1/2. With
  1 - 2 sigmoid(l) = -tanh(l/2), atanh(-tanh(l/2)) = -l/2, so C = l / tanh(l/2), an even function of l:
    |l| >= 0.5: log|l| - log tanh(|l|/2), log tanh(a/2) = log1p(-e^-a) - log1p(e^-a) (exact for large a);
    |l| <  0.5: log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720 - 127 l^8/4838400 (the series of
                log(u / tanh u), u = l/2, from the Bernoulli-number series of log cosh u - log(sinh u / u)).
  Finite with a finite gradient everywhere, l = 0 included (the closed form is evaluated only away from 0).
  Ranges from log 2 (l = 0) up, about log|l| for large |l|. logits: any shape, float32.
  """
  a = jnp.abs(logits)
  small = a < _CB_NORM_TAYLOR
  safe = jnp.where(small, 1.0, a)  # keeps the unused branch (and its gradient) finite at l = 0
  exact = jnp.log(safe) - jnp.log1p(-jnp.exp(-safe)) + jnp.log1p(jnp.exp(-safe))
  s = jnp.square(logits)
  taylor = jnp.log(2.0) + s * (1 / 12 + s * (-7 / 1440 + s * (31 / 90720 + s * (-127 / 4838400))))
  return jnp.where(small, taylor, exact)


def continuous_bernoulli_log_prob(logits, target):
  """log p(target | lambda) of the continuous Bernoulli per example in nats, (B, ...) -> (B,).

  Loaiza-Ganem & Cunningham 2019, eq. 7: p(x | lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x), a
  density on x in [0, 1] (each element), lambda = sigmoid(logits). = sum over elements of
  log C(lambda) + x log sigmoid(l) + (1 - x) log sigmoid(-l): the Bernoulli log-likelihood plus
  `continuous_bernoulli_log_norm`. target: values in [0, 1] (not checked). The Bernoulli term is written
  with log_sigmoid (exact for large |l|, and d/dl = x - sigmoid(l) at l = 0 too, where the
  max/abs form of `bce_with_logits` gives JAX's subgradient -x instead of 1/2 - x).
  """
  bernoulli = target * jax.nn.log_sigmoid(logits) + (1 - target) * jax.nn.log_sigmoid(-logits)
  per = bernoulli + continuous_bernoulli_log_norm(logits)
  return jnp.sum(per.reshape(per.shape[0], -1), axis=-1)


def continuous_bernoulli_mean(logits):
  """E[x] of the continuous Bernoulli, elementwise from logits l (lambda = sigmoid(l)); values in (0, 1).

  Loaiza-Ganem & Cunningham 2019, sec. 3: E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda)),
  1/2 at lambda = 1/2. In the logit, 2 lambda - 1 = tanh(l/2): E[x] = 1/2 + (coth(l/2) - 2/l) / 2
  (1/2 plus half the Langevin function of l/2), and below |l| = 1 its series
  1/2 + l/12 - l^3/720 + l^5/30240 - l^7/1209600 + l^9/47900160. Not lambda: e.g. lambda = 0.99 has
  mean 0.79 (the mean approaches 1 - 1/l for large l).
  """
  small = jnp.abs(logits) < _CB_MEAN_TAYLOR
  safe = jnp.where(small, 1.0, logits)
  exact = 0.5 + 0.5 / jnp.tanh(0.5 * safe) - 1.0 / safe
  s = jnp.square(logits)
  taylor = 0.5 + logits * (1 / 12 + s * (-1 / 720 + s * (1 / 30240 + s * (-1 / 1209600 + s / 47900160))))
  return jnp.where(small, taylor, exact)


def l1_sparsity(z):
  """mean |z| over batch and latent units: z (B, d). The reference sparse AE adds 1e-3 * this."""
  return jnp.mean(jnp.abs(z))


def kl_sparsity(z, rho):
  """sum_j KL(rho || rho_hat_j) between Bernoulli means (Ng 2011, "Sparse autoencoder", sec. 2.3).

  z: (B, d) pre-activations; rho_hat_j = mean over the batch of sigmoid(z_j), the average activation
  of unit j. rho: target activation in (0, 1). Returns nats (summed over units). rho_hat is clipped
  to [1e-6, 1 - 1e-6] so saturated units give a large finite penalty, not Inf.
  """
  rho_hat = jnp.clip(jnp.mean(jax.nn.sigmoid(z), axis=0), 1e-6, 1 - 1e-6)
  return jnp.sum(rho * jnp.log(rho / rho_hat) + (1 - rho) * jnp.log((1 - rho) / (1 - rho_hat)))


def top_k(z, k: int):
  """k-sparse latents (Makhzani & Frey 2014, "k-Sparse Autoencoders", alg. 1).

  z: (B, d). Keeps the k largest activations of each row, zeros the rest; gradients flow only
  through the kept units. Ties at the k-th value keep every tied unit. k: static int in [1, d].
  """
  kth = jax.lax.top_k(z, k)[0][..., -1:]
  return jnp.where(z >= kth, z, 0.0)


def contractive_penalty(encode: Callable, x):
  """Mean over the batch of ||J_f(x_i)||_F^2, the squared Frobenius norm of the encoder Jacobian.

  Rifai et al. 2011, "Contractive Auto-Encoders", eq. 2 (J_f = d h / d x). Exact: the Jacobian of
  each example is computed with `jax.jacrev` (one reverse pass per latent unit), vmapped over the batch.
  encode: maps x (B, ...) to latents (B, d); x: (B, ...). Cost: d backward passes per example.
  """
  def one(xi):
    jac = jax.jacrev(lambda v: encode(v[None])[0])(xi)  # (d, *xi.shape)
    return jnp.sum(jnp.square(jac))

  return jnp.mean(jax.vmap(one)(x))


def mlp_contractive_penalty(layers, activation: Callable, latent, x):
  """The exact contractive penalty of an MLP encoder from its weights: mean_i ||J_f(x_i)||_F^2.

  For h_k = act(h_{k-1} W_k + b_k) (k = 1..L, h_0 = x flattened) and z = h_L W + b, the Jacobian is
  J(x) = W^T D_L W_L^T ... D_1 W_1^T with D_k = diag(act'(a_k)) at the pre-activations a_k (Rifai et
  al. 2011, eq. 2; their sec. 4 writes the one-layer sigmoid case). It is formed from the latent side,
  Q = W^T D_L W_L^T ... D_1 (B, d, h_1), as batched matmuls, and ||Q W_1^T||_F^2 = sum(Q (W_1^T W_1) * Q)
  when h_1 < D, so the (B, d, D) Jacobian is never built. Equal to `contractive_penalty` (jax.jacrev)
  to float rounding, and several times faster (one pass instead of d reverse passes).

  layers: [(kernel (in, out), bias (out,))] of the hidden layers in order; activation: elementwise;
  latent: the latent layer's kernel (h_L, d); x: (B, ...). Returns a float32 scalar.
  """
  h = x.reshape(x.shape[0], -1)
  slopes = []
  for kernel, bias in layers:
    a = h @ kernel + bias
    h, slope = jax.jvp(activation, (a,), (jnp.ones_like(a),))  # act(a) and act'(a), elementwise
    slopes.append(slope)
  if not layers:
    return jnp.sum(jnp.square(latent))  # a linear encoder: J = W^T for every example
  b, d = x.shape[0], latent.shape[1]
  # Rows of Q for every (example, latent unit) pair as one (B*d, h) matrix: plain GEMMs, no batched dots.
  q = (latent.T[None] * slopes[-1][:, None, :]).reshape(b * d, -1)  # (B*d, h_L)
  for k in range(len(layers) - 1, 0, -1):
    q = ((q @ layers[k][0].T).reshape(b, d, -1) * slopes[k - 1][:, None, :]).reshape(b * d, -1)  # (B*d, h_k)
  first = layers[0][0]  # (D, h_1)
  if first.shape[1] < first.shape[0]:
    return jnp.sum((q @ (first.T @ first)) * q) / b
  return jnp.sum(jnp.square(q @ first.T)) / b


def gaussian_kl(mean, log_var):
  """KL(N(mean, exp(log_var)) || N(0, I)) per example in nats, averaged over the batch.

  mean, log_var: (B, d). Kingma & Welling 2014, "Auto-Encoding Variational Bayes", appendix B:
  -KL = 0.5 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
  """
  return jnp.mean(kl_per_unit(mean, log_var).sum(axis=-1))


def kl_per_unit(mean, log_var):
  """(B, d): the closed-form KL of each latent unit; averaged over data it measures active units."""
  return 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)


def reparameterize(key, mean, log_var):
  """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I) (Kingma & Welling 2014, sec. 2.4)."""
  return mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)


def negative_elbo(logits, target, mean, log_var, beta=1.0, likelihood: str = "bernoulli", sigma=1.0,
                  mean_fn: Callable = jax.nn.sigmoid):
  """-ELBO = E_q[-log p(x|z)] + beta * KL(q(z|x) || p(z)) in nats per example (one-sample estimate).

  logits: decoder output for one sample z ~ q(z|x), (B, ...); target (B, ...) in [0, 1];
  mean, log_var: (B, d). likelihood 'bernoulli' (BCE from logits) or 'gaussian' (mean = mean_fn(logits),
  sigmoid by default, fixed std `sigma`). beta=1 is the ELBO of Kingma & Welling 2014 eq. 10; beta != 1 is the beta-VAE
  objective of Higgins et al. 2017 eq. 4. Returns (loss, reconstruction_nll, kl), scalars.
  """
  if likelihood == "bernoulli":
    nll = bce_with_logits(logits, target)
  elif likelihood == "gaussian":
    nll = gaussian_nll(mean_fn(logits), target, sigma)
  else:
    raise ValueError(f"likelihood={likelihood!r} must be 'bernoulli' or 'gaussian'")
  kl = gaussian_kl(mean, log_var)
  return nll + beta * kl, nll, kl


def cross_entropy(logits, labels):
  """Softmax cross-entropy with integer labels, averaged over the batch. logits (B, K), labels (B,) int."""
  logp = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def psnr(reconstruction, target, max_value=1.0):
  """Peak signal-to-noise ratio in dB per example: 10 log10(max^2 / MSE_i). Shapes (B, ...) -> (B,)."""
  err = jnp.mean(jnp.square(reconstruction - target).reshape(target.shape[0], -1), axis=-1)
  return 10.0 * jnp.log10(max_value**2 / jnp.maximum(err, 1e-12))


def corrupt(key, x, kind: str, level, clip: bool = True):
  """Input corruption of the denoising autoencoder (Vincent et al. 2008, sec. 2.3; 2010 sec. 4.2).

  x: (B, ...). kind 'gaussian': x + level * N(0, 1), the additive isotropic Gaussian noise of Vincent
  et al. 2010 (sec. 4.2, x~ | x ~ N(x, level^2 I)), clipped to [0, 1] when `clip` (images, whose
  pixels live there) and left as it is for other data (clip=False); 'masking': each element set to 0
  with probability level; 'salt_pepper': each element set to 0 or 1 (equal odds) with probability
  level (both for x in [0, 1]). `level` may be a traced scalar (it is sweepable).
  """
  if kind == "gaussian":
    noisy = x + level * jax.random.normal(key, x.shape, x.dtype)
    return jnp.clip(noisy, 0.0, 1.0) if clip else noisy
  hit = jax.random.uniform(key, x.shape) < level
  if kind == "masking":
    return jnp.where(hit, 0.0, x)
  if kind == "salt_pepper":
    salt = jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, x.shape)
    return jnp.where(hit, salt.astype(x.dtype), x)
  raise ValueError(f"noise kind {kind!r} must be 'gaussian', 'masking' or 'salt_pepper'")


# --- Maximum mean discrepancy (WAE-MMD, InfoVAE) ------------------------------------------------------------

# The kernel scales of Tolstikhin et al. 2018 (WAE, sec. 4 and their code, wae.py `mmd_penalty`): the kernel
# is a sum over these multiples s of the base width C = 2 d sigma^2, so no single bandwidth has to be right.
MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
MMD_KERNELS = ("imq", "rbf")


def squared_distances(a, b):
  """(n, m) float32 ||a_i - b_j||^2 of a (n, d) and b (m, d), as ||a_i||^2 + ||b_j||^2 - 2 a_i.b_j.

  One matmul instead of an (n, m, d) difference tensor (evaluation batches of 1000 codes); the
  cancellation can leave tiny negative values, clipped to 0.
  """
  sq_a = jnp.sum(jnp.square(a), axis=-1)
  sq_b = jnp.sum(jnp.square(b), axis=-1)
  return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * (a @ b.T), 0.0)


def mmd_kernel(sq_dist, kernel: str = "imq", scales=MMD_SCALES, width=1.0):
  """sum_s k_s of squared distances (any shape): the multi-scale kernels of the MMD.

  kernel 'imq' (inverse multiquadratic): k_s = C_s / (C_s + ||x - y||^2); 'rbf' (Gaussian):
  k_s = exp(-||x - y||^2 / C_s); C_s = width * s for s in `scales`. Tolstikhin et al. 2018, sec. 4
  (IMQ; the RBF here is summed over the same widths instead of their median heuristic). Raises
  ValueError for another kernel name.
  """
  if kernel not in MMD_KERNELS:
    raise ValueError(f"kernel={kernel!r} must be one of {', '.join(map(repr, MMD_KERNELS))}")
  total = jnp.zeros_like(sq_dist)
  for s in scales:
    c = width * s
    total = total + (c / (c + sq_dist) if kernel == "imq" else jnp.exp(-sq_dist / c))
  return total


def mmd(z, z_prior, kernel: str = "imq", scales=MMD_SCALES, prior_variance=1.0):
  """Unbiased estimate of MMD^2 between the distributions of the samples z and z_prior, a float32 scalar.

  The U-statistic of Gretton et al. 2012 ("A kernel two-sample test", eq. 3, lemma 6):

      MMD_u^2 = 1/(n(n-1)) sum_{i != j} k(z_i, z_j) + 1/(m(m-1)) sum_{i != j} k(p_i, p_j)
                - 2/(n m) sum_{i, j} k(z_i, p_j)

  with the multi-scale kernel `mmd_kernel(kernel, scales)` of width C = 2 d prior_variance (Tolstikhin et
  al. 2018, sec. 4: 2 d sigma_z^2 is the expected squared distance of two prior samples). Unbiased, so it
  can be slightly negative when the distributions agree; its expectation is 0 exactly when they do (for
  these characteristic kernels). z (n, ...) codes, z_prior (m, ...) prior samples, flattened to d units
  each; prior_variance sigma_z^2 may be traced. With fewer than two samples on either side there are no
  pairs: returns 0 (a one-example evaluation batch). Raises ValueError when the two have different d or
  for an unknown kernel.
  """
  x = z.reshape(z.shape[0], -1).astype(jnp.float32)
  y = z_prior.reshape(z_prior.shape[0], -1).astype(jnp.float32)
  n, m, d = x.shape[0], y.shape[0], x.shape[1]
  if y.shape[1] != d:
    raise ValueError(f"samples of dimension {d} and {y.shape[1]} cannot be compared")
  if n < 2 or m < 2:
    return jnp.zeros([], jnp.float32)
  width = 2.0 * d * prior_variance
  k = lambda a, b: mmd_kernel(squared_distances(a, b), kernel, scales, width)

  def within(a):  # mean over the ordered pairs i != j
    size = a.shape[0]
    return jnp.sum(jnp.where(jnp.eye(size, dtype=bool), 0.0, k(a, a))) / (size * (size - 1))

  return within(x) + within(y) - 2.0 * jnp.mean(k(x, y))
