"""The Adam update's memory layout: per-leaf updates (jaxae's) against one flat vector, and the weight-decay term.

  python -m benchmarks.adam_layout                 # -> benchmarks/ADAM_LAYOUT.md (~2 min on 2 cores)
  python -m benchmarks.adam_layout --out ''        # print only

The Adam update is memory-bound on a CPU (for every parameter it reads the gradient, both moments and the
parameter, and writes three of them), and XLA fuses it per leaf. Issue 15 asked whether fewer, larger leaves
help. Each row is the real train chunk (train.build, S = 1, steps_per_call = 0, the protocol data), with
`optim.make_optimizer` swapped for:
- `per leaf`: jaxae's optimizer (inject_hyperparams(chain(add_decayed_weights(wd), adam))), one update per leaf;
- `optax.flatten`: the same chain inside `optax.flatten`, so the moments are one flat vector and the
  update one fusion over it (gradients are concatenated and updates split back every step);
- `no weight-decay term`: the chain without `add_decayed_weights` (the default weight decay is 0, but it is
  a traced, sweepable hyperparameter, so the term `g + wd * p` is computed every step).
Timed in interleaved rounds of one epoch each (median), so slow drifts of a shared machine hit every row alike.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import optax

from benchmarks import common
from jaxae import optim

HERE = os.path.dirname(os.path.abspath(__file__))


def _per_leaf(config, spe):
  return optim.make_optimizer(config, spe)


def _flat(config, spe):
  multiplier = optim.schedule_multiplier(config, spe)

  def build(learning_rate, weight_decay):
    return optax.flatten(optax.chain(optax.add_decayed_weights(weight_decay),
                                     optax.adam(lambda c: learning_rate * multiplier(c))))

  return optax.inject_hyperparams(build)(learning_rate=config.optimizer.learning_rate,
                                          weight_decay=config.optimizer.weight_decay)


def _no_decay_term(config, spe):
  multiplier = optim.schedule_multiplier(config, spe)

  def build(learning_rate, weight_decay):
    del weight_decay
    return optax.chain(optax.identity(), optax.adam(lambda c: learning_rate * multiplier(c)))

  return optax.inject_hyperparams(build)(learning_rate=config.optimizer.learning_rate,
                                          weight_decay=config.optimizer.weight_decay)


FORMS = {"per leaf (jaxae)": _per_leaf, "optax.flatten": _flat, "no weight-decay term": _no_decay_term}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="vanilla,denoising,vae,conv")
  p.add_argument("--rounds", type=int, default=9)
  p.add_argument("--out", default=os.path.join(HERE, "ADAM_LAYOUT.md"), help="'' = print only")
  args = p.parse_args(argv)
  info = common.machine()
  x, y = common.protocol_data()
  variants = args.variants.split(",")
  original = optim.make_optimizer
  compiled = {}
  try:
    for v in variants:
      for name, form in FORMS.items():
        optim.make_optimizer = form if form is not _per_leaf else original
        compiled[v, name] = common.compile_program(common.load_config(v, num_seeds=1), x, y)
  finally:
    optim.make_optimizer = original
  times = {k: [] for k in compiled}
  for _ in range(args.rounds):
    for k, c in compiled.items():
      spe = c.program.steps_per_epoch
      times[k].append(1e3 * common.time_window(c, x, y, spe, 1) / spe)
  info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
  names = list(FORMS)
  lines = ["## The Adam update's layout: per leaf against one flat vector", "",
           "`python -m benchmarks.adam_layout` — " + ", ".join(f"{k}: {v}" for k, v in info.items()), "",
           f"ms per train step (S = 1, batch 128, whole-epoch scan), median of {args.rounds} interleaved one-epoch "
           "rounds; ratio = the form's time / per leaf (> 1 is slower).", "",
           "| variant | " + " | ".join(names) + " | " + " | ".join(f"{n} / per leaf" for n in names[1:]) + " |",
           "|---|" + "---|" * (2 * len(names) - 1)]
  for v in variants:
    med = [float(np.median(times[v, n])) for n in names]
    lines.append(f"| {v} | " + " | ".join(f"{m:.2f}" for m in med) + " | " +
                 " | ".join(f"{m / med[0]:.2f}" for m in med[1:]) + " |")
  for n in names[1:]:
    ratios = [float(np.median(times[v, n]) / np.median(times[v, names[0]])) for v in variants]
    lines.append(f"\n{n} / per leaf: {min(ratios):.2f} to {max(ratios):.2f} over the variants above.")
  common.emit(lines, args.out)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
