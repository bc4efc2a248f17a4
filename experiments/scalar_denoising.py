"""Study 15: the lecture notes' scalar denoising example, trained from an `npz:` file, against its closed form.

Data x in {-2, +2} (equal counts), corrupted in every training step by additive Gaussian noise
x~ = x + e, e ~ N(0, sigma^2), sigma = 0.5, unclipped (`noise.clip=False`: Vincent et al. 2010, sec. 4.2);
a 1-1 linear autoencoder (encoder z = w1 x~ + b1, decoder x^ = w2 z + b2: `model.backbone='linear'`,
`model.latent_dim=1`, identity output) trained on the MSE against the clean x.

Closed form. The network is the affine map x^ = a x~ + c with a = w1 w2 and c = w2 b1 + b2. Its expected
loss, over fresh noise and the training sample (mean m = mean(x), and x^2 = 4 for every example), is

  L(a, c) = E[(a x~ + c - x)^2] = E[((a - 1) x + c)^2] + a^2 sigma^2
          = 4 (a - 1)^2 + 2 (a - 1) c m + c^2 + a^2 sigma^2.

dL/dc = 0 gives c = (1 - a) m; substituting, dL/da = 0 gives

  a* = (4 - m^2) / (4 - m^2 + sigma^2),   c* = (1 - a*) m,   L* = (4 - m^2) sigma^2 / (4 - m^2 + sigma^2).

With balanced data (m = 0): a* = 4 / (4 + sigma^2) = 0.941176 (the Wiener shrinkage E[x x~] / E[x~^2]),
c* = 0 (the biases converge to b2 = -w2 b1: only their combination is determined), and L* = 4 sigma^2 /
(4 + sigma^2) = 0.235294. Without biases a* = 4 / (4 + sigma^2) for any sample, since x^2 = 4. Held-out
data are fed clean, so the held-out MSE is 4 (1 - a*)^2 = 0.013841 at the optimum. (The Bayes denoiser
E[x | x~] = 2 tanh(2 x~ / sigma^2) is not linear; a 1-1 linear AE can only shrink.) A Monte Carlo
least-squares fit of (a, c) on 10^6 fresh samples checks the closed form independently.

  python -m experiments.scalar_denoising --out=out/scalar_denoising [--smoke] [--seeds=5] [--epochs=300]
"""

from __future__ import annotations

import os
import time

import numpy as np

import jaxae
from experiments import common

SIGMA = 0.5
NUM = 2000  # examples, half -2 and half +2


def write_npz(path: str) -> str:
  """x (NUM, 1) float32 in {-2, 2}, equal counts, shuffled (seed 0); y = 1 for +2 (so the held-out split
  stays balanced); returns the npz: source."""
  x = np.repeat(np.asarray([-2.0, 2.0], np.float32), NUM // 2)[np.random.default_rng(0).permutation(NUM)]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, x=x[:, None], y=(x > 0).astype(np.int32))
  return f"npz:{path}"


def closed_form(m: float, sigma: float = SIGMA) -> dict[str, float]:
  """a*, c*, the minimal training loss L* and the clean-input MSE at the optimum (module docstring)."""
  a = (4 - m**2) / (4 - m**2 + sigma**2)
  c = (1 - a) * m
  return {"a": a, "c": c, "train_loss": (4 - m**2) * sigma**2 / (4 - m**2 + sigma**2),
          "clean_mse": 4 * (a - 1) ** 2 + 2 * (a - 1) * c * m + c**2}


def monte_carlo(num: int = 1_000_000, sigma: float = SIGMA, seed: int = 0) -> tuple[float, float]:
  """(a, c) of the least-squares fit x ~ a x~ + c on fresh balanced samples: the closed form, independently."""
  rng = np.random.default_rng(seed)
  x = rng.choice([-2.0, 2.0], size=num)
  noisy = x + sigma * rng.normal(size=num)
  (a, c), *_ = np.linalg.lstsq(np.stack([noisy, np.ones(num)], axis=1), x, rcond=None)
  return float(a), float(c)


def weights(params) -> dict[str, float]:
  """w1, b1, w2, b2 of a linear 1-1 autoencoder's params, and a = w1 w2, c = w2 b1 + b2."""
  p = params["params"]
  w1, b1 = float(p["encoder"]["latent"]["kernel"][0, 0]), float(p["encoder"]["latent"]["bias"][0])
  w2, b2 = float(p["decoder"]["Dense_0"]["kernel"][0, 0]), float(p["decoder"]["Dense_0"]["bias"][0])
  return {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "a": w1 * w2, "c": w2 * b1 + b2}


def config_for(source: str, args):
  config = common.load_config("denoising")
  config.data.source = source
  config.noise.kind, config.noise.level, config.noise.clip = "gaussian", SIGMA, False
  config.model.backbone = "linear"
  config.model.latent_dim = 1
  config.model.output = "identity"
  config.num_seeds = args.seeds
  config.train.batch_size = 100
  config.train.epochs = args.epochs
  config.train.eval_every = max(1, args.epochs // 10)
  config.train.progress = False
  config.optimizer.learning_rate = 1e-2
  config.optimizer.schedule = "cosine"  # a decaying step lets the noisy gradients settle on the optimum
  config.checkpoint.every_epochs = args.epochs
  config.train.figures = False
  return config


def main(argv=None):
  def flags(p):
    p.add_argument("--epochs", type=common.count, default=300)

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  if args.smoke:
    args.epochs = 60
  started = time.perf_counter()
  source = write_npz(os.path.join(args.out, "data", "scalar.npz"))
  config = config_for(source, args)
  workdir = os.path.join(args.out, "runs", "linear_1_1")
  pairs = common.train_seeds(config, workdir)
  train = common.train_split(config)
  m = float(np.mean(train.x))
  exact = closed_form(m)
  mc_a, mc_c = monte_carlo()
  per_seed = [{"seed": seed, **weights(jaxae.load_run(workdir, seed=seed).params)} for _, seed in pairs]
  train_loss = common.member_values(pairs, "train", "loss")
  clean_mse = common.member_values(pairs, "eval", "recon_mse")
  for r, loss, mse in zip(per_seed, train_loss, clean_mse):
    r.update(train_loss=loss, clean_mse=mse)
  stats = {k: common.mean_std([r[k] for r in per_seed]) for k in ("a", "c", "train_loss", "clean_mse", "w1", "w2")}
  rows = [["w1 w2 (the product a)", common.fmt(*stats["a"], 4), f"{exact['a']:.4f}", f"{mc_a:.4f}"],
          ["w2 b1 + b2 (the offset c)", common.fmt(*stats["c"], 4), f"{exact['c']:.4f}", f"{mc_c:.4f}"],
          ["training loss, last epoch (noisy inputs)", common.fmt(*stats["train_loss"], 4), f"{exact['train_loss']:.4f}", "-"],
          ["held-out MSE (clean inputs)", common.fmt(*stats["clean_mse"], 4), f"{exact['clean_mse']:.4f}", "-"]]
  text = (f"x in {{-2, 2}} ({len(train)} training examples, mean {m:+.3f}), noise N(0, {SIGMA}^2) drawn afresh each step, "
          f"unclipped; linear 1-1 autoencoder with biases, MSE, Adam 1e-2 with cosine decay, batch "
          f"{config.train.batch_size}, {config.train.epochs} epochs, {len(per_seed)} seeds in one program. Closed form: "
          f"a* = (4 - m^2) / (4 - m^2 + sigma^2), c* = (1 - a*) m; Monte Carlo: least squares on 10^6 fresh samples. "
          f"The factors themselves are not determined (w1 = {common.fmt(*stats['w1'], 3)}, "
          f"w2 = {common.fmt(*stats['w2'], 3)}), only their product.\n\n"
          + common.markdown_table(["quantity", "learned (mean ± std over seeds)", "closed form", "Monte Carlo"], rows))
  common.write_results(args.out, "Study 15: scalar denoising, learned vs closed form", [text],
                       {"sigma": SIGMA, "train_mean": m, "closed_form": exact, "monte_carlo": {"a": mc_a, "c": mc_c},
                        "per_seed": per_seed, **{f"{k}_mean": v[0] for k, v in stats.items()},
                        **{f"{k}_std": v[1] for k, v in stats.items()}}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
