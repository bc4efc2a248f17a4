"""The reference protocol in PyTorch eager, for side-by-side timing only (torch is never a jaxae dependency).

Each variant mirrors configs/<variant>.py: MLP 784-512-256-32 (or the conv backbone), Adam 1e-3, batch
128, uint8 images scaled to [0, 1] per batch. One model = one seed: PyTorch trains S seeds as S runs,
so its per-seed time is its single-seed time. The contractive penalty uses the exact closed form of
a ReLU MLP's Jacobian, J_i = W3 diag(r2_i) W2 diag(r1_i) W1 (the same d x 784 matrices jax.jacrev builds).
"""

from __future__ import annotations

import time

import numpy as np

from jaxae.losses import MMD_SCALES  # Tolstikhin et al. 2018's kernel scales, the ones jaxae's wae uses

try:
  import torch
  from torch import nn
  from torch.nn import functional as F
except ImportError:  # the harness skips the PyTorch columns
  torch = None


VARIANTS = ("vanilla", "denoising", "sparse", "contractive", "vae", "supervised", "conv", "iwae", "wae", "rae")


def available() -> bool:
  return torch is not None


class _Model(nn.Module if torch is not None else object):
  def __init__(self, variant: str, upsample: str = "transpose", latent: int = 32):
    super().__init__()
    self.variant = variant
    self.conv = variant == "conv"
    if self.conv:
      self.enc = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.Flatten())
      self.head = nn.Linear(32 * 7 * 7, latent)
      self.dec_in = nn.Linear(latent, 32 * 7 * 7)
      self.dec = nn.Sequential(_up(32, 16, upsample), nn.ReLU(), _up(16, 1, upsample))
    else:
      self.l1, self.l2 = nn.Linear(784, 512), nn.Linear(512, 256)
      self.head = nn.Linear(256, latent)
      self.log_var = nn.Linear(256, latent) if variant in ("vae", "iwae") else None
      self.dec = nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 784))
    self.classifier = nn.Linear(latent, 10) if variant == "supervised" else None

  def encode(self, x):
    if self.conv:
      return self.head(self.enc(x)), None
    h1 = F.relu(self.l1(x.flatten(1)))
    h2 = F.relu(self.l2(h1))
    self._masks = (h1 > 0, h2 > 0)
    return self.head(h2), (self.log_var(h2) if self.log_var is not None else None)

  def decode(self, z):
    if self.conv:
      return self.dec(F.relu(self.dec_in(z)).view(-1, 32, 7, 7))
    return self.dec(z)

  def jacobian_frobenius_sq(self):
    """mean_i ||W3 diag(r2_i) W2 diag(r1_i) W1||_F^2 of the last encode() call."""
    m1, m2 = self._masks
    a = self.head.weight[None] * m2[:, None, :]  # (B, d, 256)
    a = (a @ self.l2.weight) * m1[:, None, :]  # (B, d, 512)
    return (a @ self.l1.weight).square().sum((1, 2)).mean()  # (B, d, 784) summed


def _up(cin: int, cout: int, upsample: str):
  if upsample == "transpose":
    return nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1)
  if upsample == "resize":
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1))
  return nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, 1, 1), nn.PixelShuffle(2))


def _imq_mmd(z, p):
  """The unbiased multi-scale IMQ MMD^2 of jaxae.losses.mmd (prior variance 1: C = 2 d)."""
  width = 2.0 * z.shape[1]

  def k(a, b):
    d2 = torch.cdist(a, b).square()
    return sum(width * s / (width * s + d2) for s in MMD_SCALES)

  n = z.shape[0]
  off = 1.0 - torch.eye(n)
  within = lambda a: (k(a, a) * off).sum() / (n * (n - 1))
  return within(z) + within(p) - 2.0 * k(z, p).mean()


def _loss(model: _Model, x, y):
  v = model.variant
  x_in = (x + 0.3 * torch.randn_like(x)).clamp(0, 1) if v == "denoising" else x
  mean, log_var = model.encode(x_in)
  if v == "iwae":  # minus the 5-sample IWAE bound (Burda et al. 2016 eq. 8), configs/iwae.py
    k = 5
    std = torch.exp(0.5 * log_var)
    eps = torch.randn((k, *mean.shape))
    z = mean + std * eps  # (k, B, d)
    logits = model.decode(z.reshape(-1, z.shape[-1])).reshape(k, x.shape[0], -1)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.flatten(1).expand(k, -1, -1), reduction="none").sum(-1)
    log_pz = -0.5 * (z.square() + np.log(2 * np.pi)).sum(-1)
    log_qz = -0.5 * (eps.square() + np.log(2 * np.pi) + log_var).sum(-1)
    return -(torch.logsumexp(log_px + log_pz - log_qz, 0) - np.log(k)).mean()
  if v in ("wae", "rae"):  # configs/wae.py, configs/rae.py: summed squared error per example
    recon = torch.sigmoid(model.decode(mean)).reshape(x.shape)
    cost = (recon - x).square().flatten(1).sum(1).mean()
    if v == "wae":
      return 0.05 * cost + 10.0 * _imq_mmd(mean, torch.randn_like(mean))
    decoder_sq = sum(m.weight.square().sum() for m in model.dec if isinstance(m, nn.Linear))
    return cost + 1e-4 * 0.5 * mean.square().sum(1).mean() + 1e-7 * decoder_sq
  if v == "vae":
    z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
    logits = model.decode(z)
    nll = F.binary_cross_entropy_with_logits(logits.flatten(1), x.flatten(1), reduction="none").sum(1).mean()
    kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1).mean()
    return nll + kl
  logits = model.decode(mean)
  loss = F.mse_loss(torch.sigmoid(logits).reshape(x.shape), x)
  if v == "sparse":
    loss = loss + 1e-3 * mean.abs().mean()
  elif v == "contractive":
    loss = loss + 1e-3 * model.jacobian_frobenius_sq()
  elif v == "supervised":
    loss = loss + F.cross_entropy(model.classifier(mean), y)
  return loss


def epoch_seconds(variant: str, images: np.ndarray, labels: np.ndarray, threads: int, steps: int | None = None,
                  repeats: int = 3, upsample: str = "transpose", batch: int = 128, seed: int = 0) -> float:
  """Median wall seconds of one epoch (floor(N / batch) Adam steps) in eager mode on `threads` threads.

  images (N, 28, 28, 1) uint8, labels (N,) int. With `steps` < the epoch, times that many steps and
  scales to the epoch (for the slow contractive variant). One untimed warm-up window first.
  """
  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  model = _Model(variant, upsample)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  x_all = torch.from_numpy(np.array(images.transpose(0, 3, 1, 2)))  # NCHW uint8, a writable copy
  y_all = torch.from_numpy(labels.astype(np.int64))
  spe = len(images) // batch
  steps = min(steps or spe, spe)

  def window():
    perm = torch.randperm(len(images))
    for i in range(steps):
      idx = perm[i * batch:(i + 1) * batch]
      x = x_all[idx].float() / 255.0
      loss = _loss(model, x, y_all[idx])
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()

  window()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    window()
    times.append(time.perf_counter() - t)
  return float(np.median(times)) * spe / steps
