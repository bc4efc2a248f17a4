"""Study 3: the denoising autoencoder (Vincent et al. 2008) on Gaussian noise sigma=0.3, clipped to [0, 1].

Rows of clean / corrupted / reconstructed test digits, and the PSNR (dB, per image, averaged over the
test set) of the corrupted input and of the reconstruction against the clean image, per seed. The
vanilla d=32 model, fed the same corrupted images, is the baseline.

  python -m experiments.denoising --out=out/denoising [--runs=out/bottleneck/runs] [--smoke]
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

import jaxae
from experiments import bottleneck, common
from jaxae import analysis, losses, plots
from jaxae import data as data_lib

SIGMA = 0.3
NOISE_SEED = 0


def corrupted_test(images) -> np.ndarray:
  """clip(x + 0.3 N(0, 1), 0, 1) of float test images (N, H, W, C), with a fixed key (same for every model)."""
  x = data_lib.to_float(images)
  return np.asarray(losses.corrupt(jax.random.key(NOISE_SEED), x, "gaussian", SIGMA))


def mean_psnr(images, clean) -> float:
  """Mean over images of the per-image PSNR in dB (pixel range 1)."""
  return float(np.mean(np.asarray(losses.psnr(images, clean))))


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv, runs=True)
  started = time.perf_counter()
  test = common.test_split(args)
  clean = data_lib.to_float(test.x)
  noisy = corrupted_test(test.x)
  psnr_noisy = mean_psnr(noisy, clean)
  per_seed, show = [], {}
  for key in ("denoising_d32", "vanilla_d32"):
    pairs = bottleneck.runs(args, key, "flax")
    for i, (workdir, seed) in enumerate(pairs):
      run = jaxae.load_run(workdir, seed=seed)
      out = analysis.reconstruct(run.model, run.params, noisy, run.config)
      out_clean = analysis.reconstruct(run.model, run.params, clean, run.config)
      per_seed.append({"model": key, "seed": seed, "psnr_output": mean_psnr(out, clean),
                       "psnr_clean_input": mean_psnr(out_clean, clean)})
      if i == 0:
        show[key] = out
    if key == "denoising_d32":
      common.loss_curves(pairs, os.path.join(args.out, "loss_curves.png"), "denoising d=32: train and held-out loss")
  idx = np.asarray([np.flatnonzero(test.labels == c)[0] for c in range(10) if (test.labels == c).any()])
  plots.image_rows([clean[idx], noisy[idx], show["denoising_d32"][idx], show["vanilla_d32"][idx]],
                   ["clean", f"noisy σ={SIGMA}", "denoising AE", "vanilla AE"],
                   os.path.join(args.out, "denoising_rows.png"),
                   title=f"test digits: corrupted input PSNR {psnr_noisy:.1f} dB")
  rows = [[r["model"], r["seed"], f"{psnr_noisy:.2f}", f"{r['psnr_output']:.2f}", f"{r['psnr_clean_input']:.2f}"]
          for r in per_seed]
  summary = {}
  for key in ("denoising_d32", "vanilla_d32"):
    m, s = common.mean_std([r["psnr_output"] for r in per_seed if r["model"] == key])
    summary[key] = {"psnr_output_mean": m, "psnr_output_std": s}
    rows.append([key, "mean ± std", f"{psnr_noisy:.2f}", common.fmt(m, s, 2), ""])
  common.write_csv(os.path.join(args.out, "results.csv"), ["model", "seed", "psnr_noisy_input", "psnr_output",
                   "psnr_output_from_clean_input"],
                   [[r["model"], r["seed"], psnr_noisy, r["psnr_output"], r["psnr_clean_input"]] for r in per_seed])
  text = (f"PSNR in dB against the clean image, mean over {len(test)} MNIST test images; noise sigma {SIGMA} "
          f"(clipped), key {NOISE_SEED}.\n\n"
          + common.markdown_table(["model", "seed", "PSNR noisy input", "PSNR output (noisy input)",
                                   "PSNR output (clean input)"], rows))
  common.write_results(args.out, "Study 3: denoising", [text],
                       {"psnr_noisy_input": psnr_noisy, "per_seed": per_seed, "summary": summary}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
