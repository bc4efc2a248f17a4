"""Runs every study, one after the other, into `<out>/<study>/` (the models of study 1 are reused).

  python -m experiments.run_all --out=out [--smoke] [--only=vae,pca]

The flags of the full runs reported in experiments/README.md are in FULL below (cut where the CPU cost
of a model is high: the conv model, the contractive model's exact Jacobian, the beta sweep).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

STUDIES = ("bottleneck", "latent", "denoising", "reconstructions", "vae", "sparse_contractive", "pca", "supervised",
           "sparse_sweep", "keras_note", "sae", "digits", "anomaly", "scalar_denoising", "zoo", "zoo_mnist",
           "disentanglement", "iwae_table")
MODULE = {"zoo_mnist": "zoo"}  # a study that is another study's module with other data
ALWAYS = {"zoo_mnist": ["--train_set=mnist"]}  # flags of a study in both its full and smoke versions
REUSE = ("latent", "denoising", "reconstructions", "sparse_contractive", "supervised")  # take --runs
FULL = {
    "bottleneck": [],
    "vae": ["--seeds=2", "--epochs=20"],
    "sparse_contractive": ["--contractive_epochs=2", "--contractive_seeds=2", "--seeds=2"],
    "pca": ["--seeds=3"],
    "sparse_sweep": ["--seeds=3"],
    "supervised": ["--seeds=3", "--ae20_seeds=1"],
    "keras_note": [],  # its defaults: dense 5 seeds x 50 epochs, conv 2 seeds x 10 epochs, denoising 1 x 10
    "zoo": ["--epochs=10", "--max_examples=2000"],
    "zoo_mnist": ["--epochs=5", "--max_examples=2000"],
    "disentanglement": ["--epochs=5", "--max_train=30000", "--examples=5000", "--hidden", "256", "128"],
    "iwae_table": ["--rows=vae1,iwae5", "--seeds=3"],  # 3,280 passes: ~9 h (VAE) / ~18 h (IWAE k=5) on 2 cores; resumes in stages
}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--only", default="", help="comma-separated studies (default: all)")
  p.add_argument("--mnist_dir", default="")
  args = p.parse_args(argv)
  todo = args.only.split(",") if args.only else STUDIES
  runs = os.path.join(args.out, "bottleneck", "runs")
  for name in todo:
    cmd = [sys.executable, "-m", f"experiments.{MODULE.get(name, name)}", f"--out={os.path.join(args.out, name)}"]
    cmd += (["--smoke"] if args.smoke else FULL.get(name, [])) + ALWAYS.get(name, [])
    cmd += [f"--mnist_dir={args.mnist_dir}"] if args.mnist_dir else []
    cmd += [f"--runs={runs}"] if name in REUSE and os.path.isdir(runs) else []
    t0 = time.perf_counter()
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
  main()
