"""Study 1: the reference protocol's five models, both initializations, >= 5 seeds each.

5,000 embedded training images, 30 epochs, Adam 1e-3, batch 128, MLP 784-512-256-d (ReLU, sigmoid
output, MSE): vanilla d=2 and d=32, denoising d=32 (Gaussian sigma 0.3, clipped), sparse d=32
(MSE + 1e-3 mean|z|) and the convolutional d=32 model. Reports the final training loss (mean over the
last epoch) and the held-out reconstruction MSE on the 10,000 MNIST test images, mean ± std over
seeds, beside the published single-seed PyTorch numbers.

  python -m experiments.bottleneck --out=out/bottleneck [--smoke] [--seeds=5]
"""

from __future__ import annotations

import os
import time

from experiments import common

# (key, configs/ file, latent size, published single-seed PyTorch held-out MSE)
VARIANTS = (
    ("vanilla_d2", "vanilla", 2, 0.0401),
    ("vanilla_d32", "vanilla", 32, 0.0125),
    ("denoising_d32", "denoising", 32, 0.0191),
    ("sparse_d32", "sparse", 32, 0.0130),
    ("conv_d32", "conv", 32, 0.0083),
)
INITS = ("flax", "pytorch")


def variant_config(key: str, init: str, args):
  """The protocol config of one study-1 model."""
  _, name, d, _ = next(v for v in VARIANTS if v[0] == key)
  config = common.protocol(common.load_config(name), args)
  config.model.latent_dim = d
  config.model.init = init
  if config.model.backbone == "conv":
    config.train.steps_per_call = 1  # faster for convolutions on XLA:CPU (benchmarks/)
  return config


def models(args, conv_inits=INITS) -> list[tuple[str, str]]:
  """(init, key) of every model the study trains; --smoke keeps the PyTorch init for vanilla d=32 only."""
  out = []
  for init in INITS:
    for key, _, _, _ in VARIANTS:
      if (key == "conv_d32" and init not in conv_inits) or (args.smoke and init == "pytorch" and key != "vanilla_d32"):
        continue
      out.append((init, key))
  return out


def runs(args, key: str, init: str, seeds: int | None = None) -> list[tuple[str, int]]:
  """[(workdir, seed)] of one model, trained under `<out>/runs/` or reused from `--runs`."""
  root = getattr(args, "runs", "") or os.path.join(args.out, "runs")
  config = variant_config(key, init, args)
  if seeds:
    config.num_seeds = seeds
  workdir = os.path.join(root, init, key)
  if getattr(args, "runs", "") and not seeds:  # reuse every seed that study 1 trained, whatever --seeds says
    saved = os.path.join(workdir, "config.json")
    config.num_seeds = common.read_config(saved).num_seeds if os.path.exists(saved) else config.num_seeds
  return common.train_seeds(config, workdir, reuse_only=bool(getattr(args, "runs", "")))


def main(argv=None):
  def flags(p):  # the conv model costs ~4x an MLP per seed on CPU: its seeds and inits can be cut
    p.add_argument("--conv_seeds", type=common.count0, default=0, help="seeds of the conv model (default --seeds)")
    p.add_argument("--conv_inits", default=",".join(INITS), help="initializations of the conv model")

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  started = time.perf_counter()
  conv_seeds, conv_inits = args.conv_seeds or args.seeds, tuple(args.conv_inits.split(","))
  rows, csv_rows, numbers = [], [], {"models": []}
  for init, key in models(args, conv_inits):
    _, _, d, published = next(v for v in VARIANTS if v[0] == key)
    pairs = runs(args, key, init, conv_seeds if key == "conv_d32" else None)
    train_loss = common.member_values(pairs, "train", "loss")
    test_mse = common.member_values(pairs, "eval", "recon_mse")
    tm, ts = common.mean_std(train_loss)
    em, es = common.mean_std(test_mse)
    rows.append([key.split("_")[0], d, init, len(pairs), common.fmt(tm, ts), common.fmt(em, es), f"{published:.4f}"])
    csv_rows.append([key, d, init, len(pairs), tm, ts, em, es, published])
    numbers["models"].append(dict(key=key, latent_dim=d, init=init, seeds=[s for _, s in pairs],
                                  train_loss=train_loss, test_mse=test_mse, train_loss_mean=tm, train_loss_std=ts,
                                  test_mse_mean=em, test_mse_std=es, published_test_mse=published))
    common.loss_curves(pairs, os.path.join(args.out, "loss_curves", f"{init}_{key}.png"),
                       f"{key} ({init} init): train and held-out loss, mean ± std over {len(pairs)} seeds")
  header = ["model", "d", "init", "seeds", "train loss (last epoch)", "held-out MSE (MNIST test)", "published (PyTorch, 1 seed)"]
  common.write_csv(os.path.join(args.out, "results.csv"), ["key", "latent_dim", "init", "seeds", "train_loss_mean",
                   "train_loss_std", "test_mse_mean", "test_mse_std", "published_test_mse"], csv_rows)
  cfg = variant_config("vanilla_d32", "flax", args)
  note = (f"Protocol: {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, Adam {cfg.optimizer.learning_rate}, "
          f"MLP 784-{'-'.join(map(str, cfg.model.hidden))}-d, "
          f"{'256' if args.smoke else '5,000'} embedded training images; held-out MSE on "
          f"{'500' if args.smoke else '10,000'} MNIST test images. Mean ± std (ddof=1) over seeds.\n")
  common.write_results(args.out, "Study 1: bottleneck and variants (reference protocol)",
                       [note, common.markdown_table(header, rows)], numbers, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
