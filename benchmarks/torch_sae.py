"""A straightforward PyTorch TopK sparse autoencoder, for side-by-side timing only (torch is never a jaxae dependency).

The same algorithm as jaxae's 'sae' variant with sae.activation='topk' (jaxae/variants/sae.py): inputs
scaled by one scalar, pi = (x - b_dec) W_enc + b_enc, z = ReLU(TopK_k(pi)) scattered densely,
x_hat = z W_dec + b_dec, loss = mean ||x - x_hat||^2 + auxk_coefficient * mean ||e - W_dec z_aux||^2 over
the top k_aux dead latents (when any), the gradient component parallel to each decoder row removed,
Adam, unit-norm decoder rows after the step, steps-since-fired counters. S SAEs are S models trained one
after the other in a Python loop, each with its own optimizer (how SAELens and sparsify train several).
"""

from __future__ import annotations

import time

import numpy as np

try:
  import torch
except ImportError:  # the harness skips the PyTorch columns
  torch = None


def available() -> bool:
  return torch is not None


class TopKSAE:
  def __init__(self, d: int, m: int, k: int, k_aux: int, dead_window: int, seed: int, device: str):
    g = torch.Generator(device="cpu").manual_seed(seed)
    w = torch.randn(m, d, generator=g)
    w = w / w.norm(dim=1, keepdim=True)
    self.W_dec = w.clone().to(device).requires_grad_()
    self.W_enc = w.T.clone().contiguous().to(device).requires_grad_()
    self.b_enc = torch.zeros(m, device=device, requires_grad=True)
    self.b_dec = torch.zeros(d, device=device, requires_grad=True)
    self.params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
    self.opt = torch.optim.Adam(self.params, lr=1e-3)
    self.k, self.k_aux, self.window = k, k_aux, dead_window
    self.since_fired = torch.zeros(m, dtype=torch.long, device=device)

  def step(self, x, auxk_coefficient: float = 1 / 32) -> float:
    pi = (x - self.b_dec) @ self.W_enc + self.b_enc
    values, idx = pi.topk(self.k, dim=-1, sorted=False)
    z = torch.zeros_like(pi).scatter(-1, idx, values.relu())
    x_hat = z @ self.W_dec + self.b_dec
    err = x - x_hat
    loss = err.pow(2).sum(-1).mean()
    dead = self.since_fired >= self.window
    if bool(dead.any()):
      masked = torch.where(dead[None], pi, torch.full_like(pi, -float("inf")))
      v, i = masked.topk(self.k_aux, dim=-1, sorted=False)
      v = torch.where(torch.isfinite(v), v, torch.zeros_like(v)).relu()
      e_hat = torch.zeros_like(pi).scatter(-1, i, v) @ self.W_dec
      loss = loss + auxk_coefficient * (err.detach() - e_hat).pow(2).sum(-1).mean()
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
      g = self.W_dec.grad
      g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec
    self.opt.step()
    with torch.no_grad():
      self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)
      fired = (z > 0).any(0)
      self.since_fired = torch.where(fired, torch.zeros_like(self.since_fired),
                                     (self.since_fired + x.shape[0]).clamp(max=self.window))
    return float(loss.detach())


def step_seconds(x_all: np.ndarray, num_saes: int, m: int, k: int, k_aux: int, dead_window: int, batch: int,
                 steps: int, threads: int, device: str = "cpu") -> list[float]:
  """Wall seconds of each of `steps` loop iterations (one step of every one of `num_saes` SAEs), after one
  untimed warm-up iteration. x_all (N, D) float32 with N >= (steps + 1) * batch."""
  torch.set_num_threads(threads)
  d = x_all.shape[1]
  x = torch.from_numpy(np.ascontiguousarray(x_all)).to(device)
  scale = float(np.sqrt(d / np.mean(np.sum(np.square(x_all.astype(np.float64)), axis=1))))
  saes = [TopKSAE(d, m, k, k_aux, dead_window, seed, device) for seed in range(num_saes)]
  times = []
  for step in range(steps + 1):
    xb = x[step * batch:(step + 1) * batch] * scale
    if device != "cpu":
      torch.cuda.synchronize()
    t = time.perf_counter()
    for model in saes:
      model.step(xb)
    if device != "cpu":
      torch.cuda.synchronize()
    if step:
      times.append(time.perf_counter() - t)
  return times
