"""Study 11: the Keras reference note's networks, and its claim about supervised 2-D codes.

The note's dense autoencoder (configs/keras_dense.py: 784-500-300-100-2 tanh, RMSprop 0.002, binary
cross-entropy) is trained without labels and as a supervised AE (`:supervised`: classifier head
2 -> 64 -> 128 -> 10, tanh, dropout 0.5, loss BCE + 0.1 CE). The note claims a linear classifier reads
the digit from the unsupervised 2-D code at roughly 55-70% and from the supervised one at over 90%.
Here: linear-probe accuracy (logistic regression fit on the codes of the training images, scored on the
codes of the 10,000 MNIST test images) per seed, mean ± std, with the supervised network's own
classifier-head accuracy next to it. Then the note's AE(20) -> t-SNE map (the same network with a 20-D
code, its test codes embedded by t-SNE), and the note's convolutional autoencoder
(configs/keras_conv.py, 7x7x16 spatial code) and its denoising setting (noise factor 0.4) on test digits.

  python -m experiments.keras_note --out=out/keras_note [--smoke] [--seeds=5] [--conv_seeds=2]
      [--conv_epochs=10] [--denoising_epochs=10] [--tsne_points=10000]

Probes come from `jaxae.evaluate` (through `experiments.common.code_scores`); t-SNE is `tsne_map`.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from sklearn.manifold import TSNE

import jaxae
from experiments import common
from experiments.latent import probe_accuracy
from jaxae import analysis, losses, plots
from jaxae import data as data_lib

NOTE_CLAIMS = {"dense_d2": "55-70%", "dense_d2_supervised": "> 90%"}
NOISE_FACTOR = 0.4  # the note's denoising setting (configs/keras_*.py:denoising)
NOISE_SEED = 0


def tsne_map(codes, seed: int = 0) -> np.ndarray:
  """(N, d) codes -> (N, 2) t-SNE embedding (van der Maaten & Hinton 2008; sklearn, PCA init)."""
  n = len(codes)
  return TSNE(2, init="pca", perplexity=min(30.0, (n - 1) / 3), random_state=seed).fit_transform(codes)


def noisy_test(images, level: float = NOISE_FACTOR) -> np.ndarray:
  """clip(x + level * N(0, 1), 0, 1) of test images (N, H, W, C), float32, a fixed key for every model."""
  return np.asarray(losses.corrupt(jax.random.key(NOISE_SEED), data_lib.to_float(images), "gaussian", level))


def mean_psnr(images, clean) -> float:
  """Mean over images of the per-image PSNR in dB (pixel range 1)."""
  return float(np.mean(np.asarray(losses.psnr(images, clean))))


def note_config(name: str, setting: str, args, epochs: int, seeds: int, eval_every: int = 5):
  """configs/<name>.py:<setting> on the study's data (embedded training images, MNIST test set)."""
  config = common.protocol(common.load_config(name, setting), args, epochs, eval_every)
  config.num_seeds = seeds
  return config


def _held_out(workdir: str, seed: int, metric: str) -> float:
  return float(common.member_values([(workdir, seed)], "eval", metric)[0])


def dense_codes(args, root: str, test, train) -> tuple[dict, list]:
  """Trains the unsupervised and the supervised d=2 dense networks (all seeds in one pass each) and probes
  their codes. Returns (per-seed results by model, table rows)."""
  cfgs = {"dense_d2": note_config("keras_dense", "", args, args.dense_epochs, args.seeds),
          "dense_d2_supervised": note_config("keras_dense", "supervised", args, args.dense_epochs, args.seeds)}
  if args.smoke:
    cfgs["dense_d2_supervised"].train.epochs = 3  # enough steps for the classifier head to learn something
  results, rows = {}, []
  for name, config in cfgs.items():
    pairs = common.train_seeds(config, os.path.join(root, name))
    per_seed = []
    for i, (workdir, seed) in enumerate(pairs):
      held_out = {"test_bce": "recon_bce", "test_mse": "recon_mse",
                  **({"head_accuracy": "accuracy"} if name.endswith("supervised") else {})}
      r, z_te = common.code_scores(workdir, seed, train, test, held_out)
      per_seed.append(r)
      if i == 0:
        plots.latent_scatter(z_te, test.labels, os.path.join(args.out, f"latent_{name}.png"),
                             f"{name} (Keras note): codes of {len(z_te)} MNIST test images (seed {seed})")
    results[name] = per_seed
    common.loss_curves(pairs, os.path.join(args.out, "loss_curves", f"{name}.png"), f"{name}: train and held-out loss")
    stat = lambda k, digits=3: common.fmt(*common.mean_std([r[k] for r in per_seed]), digits)
    rows.append([name, len(per_seed), config.train.epochs, f"**{stat('probe')}**", stat("knn"),
                 stat("head_accuracy") if name.endswith("supervised") else "—", stat("test_bce", 1),
                 stat("test_mse", 4), NOTE_CLAIMS[name]])
  return results, rows


def ae20_tsne(args, root: str, test, train) -> dict:
  """The same dense network with a 20-D code (one seed), its linear probe, and a t-SNE map of its test codes."""
  config = note_config("keras_dense", "", args, args.dense_epochs, 1)
  config.model.latent_dim = 20
  pairs = common.train_seeds(config, os.path.join(root, "dense_d20"))
  workdir, seed = pairs[0]
  run = jaxae.load_run(workdir, seed=seed)
  n = min(args.tsne_points, len(test))
  z_tr = analysis.encode(run.model, run.params, train.x, run.config)
  z_te = analysis.encode(run.model, run.params, test.x, run.config)
  t0 = time.perf_counter()
  emb = tsne_map(z_te[:n])
  tsne_seconds = time.perf_counter() - t0
  plots.latent_scatter(emb, test.labels[:n], os.path.join(args.out, "tsne_d20.png"),
                       f"t-SNE of the AE(20) codes (Keras note's dense network) of {n} MNIST test images")
  np.savez_compressed(os.path.join(args.out, "tsne_d20.npz"), embedding=emb, labels=test.labels[:n])
  common.loss_curves(pairs, os.path.join(args.out, "loss_curves", "dense_d20.png"), "dense d=20: train and held-out loss")
  return {"seed": seed, "epochs": config.train.epochs, "tsne_points": n, "tsne_seconds": tsne_seconds,
          "probe": probe_accuracy(z_tr, train.labels, z_te, test.labels),
          "test_bce": _held_out(workdir, seed, "recon_bce"), "test_mse": _held_out(workdir, seed, "recon_mse")}


def conv_models(args, root: str, test, dense_run) -> tuple[dict, list]:
  """The note's conv autoencoder (and its denoising setting): held-out BCE / MSE, test digits, denoised digits."""
  idx = np.asarray([np.flatnonzero(test.labels == c)[0] for c in range(10) if (test.labels == c).any()])
  clean = data_lib.to_float(test.x)
  config = note_config("keras_conv", "", args, args.conv_epochs, args.conv_seeds)
  pairs = common.train_seeds(config, os.path.join(root, "conv"))
  per_seed, rows = [], []
  noisy = noisy_test(test.x)
  for i, (workdir, seed) in enumerate(pairs):
    r = {"seed": seed, "test_bce": _held_out(workdir, seed, "recon_bce"), "test_mse": _held_out(workdir, seed, "recon_mse")}
    if i == 0:  # figures from the first seed
      run = jaxae.load_run(workdir, seed=seed)
      shown = analysis.reconstruct(run.model, run.params, test.x[idx], run.config)
      r["code_shape"] = list(analysis.encode(run.model, run.params, test.x[:1], run.config).shape[1:])
      conv_on_noisy = analysis.reconstruct(run.model, run.params, noisy, run.config)
    per_seed.append(r)
  common.loss_curves(pairs, os.path.join(args.out, "loss_curves", "conv.png"), "conv (Keras note): train and held-out loss")
  dense = analysis.reconstruct(dense_run.model, dense_run.params, test.x[idx], dense_run.config)
  code = "x".join(str(c) for c in per_seed[0]["code_shape"])
  plots.image_rows([clean[idx], shown, dense], ["input", f"conv AE ({code})", "dense AE (d=2)"],
                   os.path.join(args.out, "conv_reconstructions.png"),
                   title=f"MNIST test digits, Keras note networks (seed {pairs[0][1]})")
  out = {"per_seed": per_seed, "epochs": config.train.epochs}
  bce, mse = (common.mean_std([r[k] for r in per_seed]) for k in ("test_bce", "test_mse"))
  rows.append([f"conv ({code} code)", len(per_seed), config.train.epochs, "", "", "", common.fmt(*bce, 1),
               common.fmt(*mse, 4), "reconstructions"])
  if args.denoising_epochs:
    dn = note_config("keras_conv", "denoising", args, args.denoising_epochs, 1)
    dpairs = common.train_seeds(dn, os.path.join(root, "conv_denoising"))
    run = jaxae.load_run(dpairs[0][0], seed=dpairs[0][1])
    denoised = analysis.reconstruct(run.model, run.params, noisy, run.config)
    out["denoising"] = {"seed": dpairs[0][1], "epochs": dn.train.epochs, "noise_factor": NOISE_FACTOR,
                        "psnr_noisy_input": mean_psnr(noisy, clean), "psnr_denoised": mean_psnr(denoised, clean),
                        "psnr_conv_on_noisy": mean_psnr(conv_on_noisy, clean),
                        "test_bce": _held_out(*dpairs[0], "recon_bce")}
    common.loss_curves(dpairs, os.path.join(args.out, "loss_curves", "conv_denoising.png"),
                       "conv denoising (Keras note): train and held-out loss")
    d = out["denoising"]
    plots.image_rows([clean[idx], noisy[idx], denoised[idx], conv_on_noisy[idx]],
                     ["clean", f"noisy ({NOISE_FACTOR})", "denoising conv AE", "conv AE"],
                     os.path.join(args.out, "conv_denoising.png"),
                     title=f"noise factor {NOISE_FACTOR}: PSNR noisy {d['psnr_noisy_input']:.1f} dB, "
                           f"denoised {d['psnr_denoised']:.1f} dB")
    rows.append(["conv denoising (noise 0.4, batch 256)", 1, dn.train.epochs, "", "", "", f"{d['test_bce']:.1f}",
                 "", f"PSNR {d['psnr_noisy_input']:.2f} -> {d['psnr_denoised']:.2f} dB"])
  return out, rows


def main(argv=None):
  def flags(p):
    p.add_argument("--dense_epochs", type=common.count, default=50, help="epochs of the dense networks (the config's 50)")
    p.add_argument("--conv_seeds", type=common.count0, default=0, help="seeds of the conv AE (default 2, smoke 1)")
    p.add_argument("--conv_epochs", type=common.count, default=10, help="epochs of the conv AE")
    p.add_argument("--denoising_epochs", type=common.count0, default=10, help="epochs of the denoising conv AE (0: skip)")
    p.add_argument("--tsne_points", type=common.count, default=10000, help="test images embedded by t-SNE")

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  args.conv_seeds = args.conv_seeds or (1 if args.smoke else 2)
  started = time.perf_counter()
  test = common.test_split(args)
  train = common.train_split(note_config("keras_dense", "", args, args.dense_epochs, args.seeds))
  root = os.path.join(args.out, "runs")
  dense, rows = dense_codes(args, root, test, train)
  ae20 = ae20_tsne(args, root, test, train)
  dense_run = jaxae.load_run(os.path.join(root, "dense_d2"), seed=dense["dense_d2"][0]["seed"])
  conv, conv_rows = conv_models(args, root, test, dense_run)
  rows.append(["dense d=20 (AE(20) -> t-SNE)", 1, ae20["epochs"], f"{ae20['probe']:.3f}", "", "",
               f"{ae20['test_bce']:.1f}", f"{ae20['test_mse']:.4f}", "t-SNE map"])
  rows += conv_rows
  header = ["model", "seeds", "epochs", "linear-probe accuracy", "5-NN accuracy", "classifier-head accuracy",
            "held-out BCE (nats/image)", "held-out MSE", "the note"]
  per_seed_rows = [[name, r["seed"], r["probe"], r["knn"], r.get("head_accuracy", ""), r["test_bce"], r["test_mse"]]
                   for name, v in dense.items() for r in v]
  common.write_csv(os.path.join(args.out, "results.csv"),
                   ["model", "seed", "linear_probe", "knn5", "head_accuracy", "test_bce", "test_mse"], per_seed_rows)
  seeds_table = common.markdown_table(["model", "seed", "linear probe", "5-NN", "classifier head"],
                                      [[n, r["seed"], f"{r['probe']:.3f}", f"{r['knn']:.3f}",
                                        f"{r['head_accuracy']:.3f}" if "head_accuracy" in r else "—"]
                                       for n, v in dense.items() for r in v])
  text = (f"Trained on {len(train)} training images (the embedded MNIST subset); probes fit on their codes, every "
          f"accuracy and held-out number on {len(test)} MNIST test images. Mean ± std (ddof=1) over seeds trained "
          f"in one pass per model.\n\n" + common.markdown_table(header, rows) + "\nPer seed:\n\n" + seeds_table)
  summary = {name: {k: common.mean_std([r[k] for r in v]) for k in ("probe", "knn")} for name, v in dense.items()}
  common.write_results(args.out, "Study 11: the Keras note's networks", [text],
                       {"train_images": len(train), "test_images": len(test), "per_seed": dense, "summary": summary,
                        "ae20": ae20, "conv": conv}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
