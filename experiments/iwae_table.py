"""Study 17: Burda et al. 2016 (IWAE), Table 1, one stochastic layer, at the paper's protocol, with error bars.

MNIST (the official 60,000 training images, `--mnist_dir`), dynamically binarized (fresh Bernoulli pixels every
step, `data.binarize='dynamic'`); the test set binarized once with a fixed seed. Network 784-200-200-50 tanh
(Gaussian encoder, Bernoulli decoder), Adam with learning rate 0.001 * 10^(-i/7) for 3^i passes, i = 0..7
(3,280 passes, `optimizer.schedule='iwae'`), batch 20. Rows (the paper's numbers: test -log p(x) in nats,
estimated with 5,000 importance samples):

  vae1    VAE, k=1                                  86.76
  vae5    VAE, k=5  (the mean of 5 one-sample ELBOs: MIWAE with M=5, K=1)   86.47
  vae50   VAE, k=50                                 86.35
  iwae5   IWAE, k=5                                 85.54
  iwae50  IWAE, k=50                                84.78

Each row trains all `--seeds` seeds in one program. The full protocol is long on a CPU (~5 s per pass per
seed at batch 20 on 2 cores), so it runs in stages: every call trains up to the next stage boundary
(1, 4, 13, 40, 121, 364, 1093, 3280 passes) that `--passes` allows, resuming the run where it stopped, and
records the test -log p(x) after each stage (`--stage_samples` importance samples on `--stage_examples` test
images); the row's final number uses `--num_samples` samples on the whole test set (or `--max_examples`). The
same command resumes an interrupted run bit for bit. `--batch` other than 20 is a stated deviation.
Each stage records the machine it trained on (`device`) and the results split the training seconds by it:
a row's later stages can run on a GPU from the CPU's checkpoint (`--checkpoint_every=50 --unroll=10` there;
the resumed run is exact, but not bit-identical to the CPU's own continuation).

  python -m experiments.iwae_table --out=out/iwae_table --rows=vae1,iwae5 --seeds=3 --passes=121 --batch=20
"""

from __future__ import annotations

import collections
import json
import os
import time

import jax
import numpy as np

import jaxae
from experiments import common
from jaxae import evaluate, plots

PAPER = {"vae1": 86.76, "vae5": 86.47, "vae50": 86.35, "iwae5": 85.54, "iwae50": 84.78}
STAGES = tuple((3 ** (i + 1) - 1) // 2 for i in range(8))  # passes at the end of stage i: 1, 4, 13, ..., 3280


def row_config(row: str, args):
  """The config of one row of Table 1 at the paper's protocol (with this call's --batch and --passes)."""
  config = common.load_config("iwae")
  k = int(row.lstrip("vaeiw"))
  if row.startswith("vae"):
    config.loss.iwae_estimator, config.loss.iwae_m, config.loss.iwae_k = "miwae", k, 1  # the mean of k ELBOs
  else:
    config.loss.iwae_estimator, config.loss.iwae_m, config.loss.iwae_k = "iwae", 1, k
  config.data.source = f"idx:{args.mnist_dir}"
  config.data.split = "train"
  config.data.eval_source = f"idx:{args.mnist_dir}"
  config.data.eval_split = "test"
  config.data.binarize = "dynamic"
  config.loss.reconstruction = "bce"
  config.model.backbone = "mlp"
  config.model.hidden = (200, 200)
  config.model.activation = "tanh"
  config.model.latent_dim = 50
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "iwae"
  config.train.batch_size = args.batch
  config.train.eval_every = 10**6  # the study evaluates -log p(x) itself, after each stage
  config.train.progress = False
  config.train.figures = False
  config.checkpoint.every_epochs = args.checkpoint_every  # resume-safe: an accelerator saves less often
  config.train.unroll = args.unroll  # resume-safe: steps per while-loop iteration (fewer loop trips on a GPU)
  config.checkpoint.keep = 2
  config.num_seeds = args.seeds
  if args.smoke:
    config.data.max_train, config.data.max_eval = 512, 200
    config.model.hidden, config.model.latent_dim = (32, 32), 4
  return config


def nll(workdir: str, samples: int, examples: int) -> list[float]:
  """Test -log p(x) of every seed (importance-sampled, jaxae.evaluate), nats per image."""
  run = jaxae.load_run(workdir)
  ev = evaluate.evaluate_run(run, evaluate.Options(num_samples=samples, max_examples=examples, figures=False,
                                                   probes=False), quiet=True)
  return [float(v) for v in ev["settings"][0]["eval"]["nll"]["per_seed"]]


def main(argv=None):
  def flags(p):
    p.add_argument("--rows", default="vae1,iwae5", help="comma-separated: " + ",".join(PAPER))
    p.add_argument("--passes", type=common.count, default=3280, help="train up to this many passes (stage boundaries)")
    p.add_argument("--batch", type=common.count, default=20)
    p.add_argument("--num_samples", type=common.count, default=5000)
    p.add_argument("--max_examples", type=common.count0, default=0)
    p.add_argument("--stage_samples", type=common.count, default=1000)
    p.add_argument("--stage_examples", type=common.count, default=1000)
    p.add_argument("--checkpoint_every", type=common.count, default=1, help="passes between checkpoints (a stop saves one)")
    p.add_argument("--unroll", type=common.count, default=1, help="train.unroll: steps per scan iteration (GPU: e.g. 10)")

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  if args.smoke:
    args.seeds, args.passes, args.batch = 2, 1, 64
    args.num_samples = args.stage_samples = 20
    args.max_examples = args.stage_examples = 100
  started = time.perf_counter()
  rows = [r for r in args.rows.split(",") if r]
  unknown = sorted(set(rows) - set(PAPER))
  if unknown:
    raise SystemExit(f"--rows: unknown {unknown}; choose from {', '.join(PAPER)}")
  history_path = os.path.join(args.out, "history.json")
  history = json.load(open(history_path)) if os.path.exists(history_path) else {}
  results = {}
  # Stage by stage, every row at each stage: an interrupted study has all rows at comparable passes.
  for passes in [s for s in STAGES if s <= args.passes] or [args.passes]:
    for row in rows:
      workdir = os.path.join(args.out, "runs", row)
      hist = history.setdefault(row, {})
      if str(passes) in hist:  # trained and evaluated by an earlier call
        continue
      config = row_config(row, args)
      config.train.epochs = passes
      t = time.perf_counter()
      common.ensure_trained(config, workdir)
      seconds = time.perf_counter() - t  # training only: the stage's evaluation is not counted
      hist[str(passes)] = {"nll": nll(workdir, args.stage_samples, args.stage_examples), "train_seconds": seconds,
                           "device": jax.devices()[0].device_kind}  # stages of one row may run on different machines
      common.write_json(history_path, history)
      print(f"{row}: {passes} passes, test -log p(x) {np.mean(hist[str(passes)]['nll']):.2f} "
            f"(K={args.stage_samples}, {args.stage_examples} images)", flush=True)
  for row in rows:
    hist = history[row]
    final = nll(os.path.join(args.out, "runs", row), args.num_samples, args.max_examples)
    by_device = collections.defaultdict(float)  # stages recorded before devices were: this CPU
    for h in hist.values():
      by_device[h.get("device", "cpu")] += h.get("train_seconds", 0.0)
    results[row] = {"passes": max(int(p) for p in hist), "nll_per_seed": final, "paper": PAPER[row],
                    "train_seconds": sum(by_device.values()), "train_seconds_by_device": dict(by_device)}
  table = []
  for row, r in results.items():
    mean, std = common.mean_std(r["nll_per_seed"])
    table.append([row, r["paper"], common.fmt(mean, std, 2), f"{mean - r['paper']:+.2f}", r["passes"],
                  len(r["nll_per_seed"]), " + ".join(f"{v:.0f} ({k})" for k, v in r["train_seconds_by_device"].items())])
  curves = {row: ([int(p) for p in sorted(history[row], key=int)],
                  [float(np.mean(history[row][p]["nll"])) for p in sorted(history[row], key=int)]) for row in rows}
  plots.metric_curves(curves, {row: PAPER[row] for row in rows}, os.path.join(args.out, "nll_vs_passes.png"),
                      "passes over the training set", "test -log p(x), nats",
                      "IWAE Table 1 at the paper's protocol: test NLL against passes (dashed: the paper)")
  text = (f"Test -log p(x) in nats, {args.num_samples} importance samples, "
          f"{'all 10,000' if not args.max_examples else args.max_examples} test images (binarized once), mean ± std over "
          f"seeds; batch {args.batch}{'' if args.batch == 20 else ' (the paper: 20)'}; passes done of the paper's 3,280.\n\n"
          + common.markdown_table(["row", "paper", "jaxae", "difference", "passes", "seeds", "train s"], table))
  common.write_results(args.out, "Study 17: IWAE Table 1 (Burda et al. 2016)", [text],
                       {"rows": results, "history": history}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
