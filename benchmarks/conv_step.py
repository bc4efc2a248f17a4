"""Where the conv backbone's training step goes on XLA:CPU, and which matmul forms of its convolutions win.

  python -m benchmarks.conv_step                  # both tables -> benchmarks/CONV_STEP.md (~3 min on 2 cores)
  python -m benchmarks.conv_step --out ''         # print only

Layers: each 3x3 convolution of configs/conv.py alone (jit, S = 1, batch 128), forward and forward +
backward (value_and_grad of <y, g> in the kernel, and in x except for the first layer), in each form
that computes the same function with the same parameters. Steps: the real train chunk (train.build,
steps_per_call = 0, S = 1) with models.py's conv functions swapped for each form, against PyTorch eager
(benchmarks/torch_ref.py) in the same process. Everything is timed in interleaved rounds (median of
rounds, each the median of `repeats` calls), so a shared machine's slow drifts hit every form alike.
Run it under `flock /work/heavy.lock` on the shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import common, torch_ref
from jaxae import models

B = 128


# Alternatives tried and dropped (same function as models.conv3x3 / conv_transpose3x3_s2).
def conv_sum_of_dots(x, kernel, stride: int = 1):
  """conv3x3 as 9 (B Ho Wo, Cin) @ (Cin, Cout) products of the shifted views, summed: no concatenate."""
  b, h, w, c = x.shape
  ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  k = kernel.reshape(9, c, kernel.shape[-1])
  views = [lax.slice(xp, (0, dy, dx, 0), (b, dy + stride * (ho - 1) + 1, dx + stride * (wo - 1) + 1, c), (1, stride, stride, 1))
           for dy in range(3) for dx in range(3)]
  return sum((jnp.dot(v, k[t]) for t, v in enumerate(views[1:], 1)), jnp.dot(views[0], k[0]))


def conv_channels_major(x, kernel, stride: int = 1):
  """conv3x3 with (9 Cin, B Ho Wo) patches: y^T = kernel^T patches, then back to NHWC."""
  b, h, w, c = x.shape
  ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
  xp = jnp.pad(x.transpose(3, 0, 1, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))
  views = [lax.slice(xp, (0, 0, dy, dx), (c, b, dy + stride * (ho - 1) + 1, dx + stride * (wo - 1) + 1), (1, 1, stride, stride))
           for dy in range(3) for dx in range(3)]
  patches = jnp.concatenate([v.reshape(c, -1) for v in views], 0)
  yt = lax.dot_general(kernel.reshape(9 * c, -1), patches, (((0,), (0,)), ((), ())))
  return yt.reshape(-1, b, ho, wo).transpose(1, 2, 3, 0)


def conv_transpose_scatter_nhwc(x, kernel):
  """conv_transpose3x3_s2 as col2im with T (B, h, w, 3, 3, Cout) kept pixel-major (NHWC)."""
  b, h, w, c = x.shape
  out = kernel.shape[-1]
  t = jnp.dot(x, kernel.transpose(2, 0, 1, 3).reshape(c, 9 * out)).reshape(b, h, w, 3, 3, out)
  tp = jnp.pad(t, ((0, 0), (1, 0), (1, 0), (0, 0), (0, 0), (0, 0)))
  tap = models._TAP
  phases = []
  for a in range(2):
    for bb in range(2):
      terms = [tp[:, d:d + h, e:e + w, tap[d, a], tap[e, bb]]
               for d in range(2) for e in range(2) if tap[d, a] < 3 and tap[e, bb] < 3]
      phases.append(sum(terms[1:], terms[0]))
  y = jnp.stack(phases, axis=3).reshape(b, h, w, 2, 2, out).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, out)


_xla_conv = lambda s: (lambda x, k: lax.conv_general_dilated(x, k, (s, s), ((1, 1), (1, 1)),
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
_xla_convt = lambda x, k: lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

# (layer, x shape, kernel shape, input gradient?, reference, {form: fn})
LAYERS = [
    ("Conv_0 1->16 s2", (B, 28, 28, 1), (3, 3, 1, 16), False, _xla_conv(2),
     {"patches (default)": lambda x, k: models.conv3x3(x, k, 2), "sum of 9 dots": lambda x, k: conv_sum_of_dots(x, k, 2),
      "xla conv": _xla_conv(2)}),
    ("Conv_1 16->32 s2", (B, 14, 14, 16), (3, 3, 16, 32), True, _xla_conv(2),
     {"patches (default)": lambda x, k: models.conv3x3(x, k, 2), "sum of 9 dots": lambda x, k: conv_sum_of_dots(x, k, 2),
      "channels-major patches": lambda x, k: conv_channels_major(x, k, 2), "xla conv": _xla_conv(2)}),
    ("ConvTranspose_0 32->16", (B, 7, 7, 32), (3, 3, 32, 16), True, _xla_convt,
     {"gather (default)": models.conv_transpose3x3_s2_gather, "scatter": models.conv_transpose3x3_s2_scatter,
      "scatter, pixel-major T": conv_transpose_scatter_nhwc}),
    ("ConvTranspose_1 16->1", (B, 14, 14, 16), (3, 3, 16, 1), True, _xla_convt,
     {"gather": models.conv_transpose3x3_s2_gather, "scatter (default)": models.conv_transpose3x3_s2_scatter,
      "scatter, pixel-major T": conv_transpose_scatter_nhwc, "xla conv_transpose": _xla_convt}),
    ("ConvTranspose 16->3 (RGB, 16x16 -> 32x32)", (B, 16, 16, 16), (3, 3, 16, 3), True, _xla_convt,
     {"gather": models.conv_transpose3x3_s2_gather, "scatter (default)": models.conv_transpose3x3_s2_scatter}),
]

_conv3x3 = models.conv3x3  # models.py's own, kept while conv_functions swaps the module attribute
_gather_all = lambda x, k: models.conv_transpose3x3_s2_gather(x, k)
_scatter_all = lambda x, k: models.conv_transpose3x3_s2_scatter(x, k)
# Whole-step forms: (conv3x3 or None = models.py's, conv_transpose3x3_s2 or None = models.py's).
STEPS = {
    "before: gather for every transposed conv": (None, _gather_all),
    "default: scatter for <= 4 output channels": (None, None),
    "scatter for every transposed conv": (None, _scatter_all),
    "default + channels-major Conv_1": (lambda x, k, stride=1: _conv3x3(x, k, stride) if x.shape[-1] == 1
                                        else conv_channels_major(x, k, stride), None),
    "default + sum of 9 dots for every conv": (conv_sum_of_dots, None),
}


@contextlib.contextmanager
def conv_functions(conv, conv_t):
  """models.py's conv functions swapped while a program is traced (PatchConv looks them up by name)."""
  saved = models.conv3x3, models.conv_transpose3x3_s2
  models.conv3x3 = conv or saved[0]
  models.conv_transpose3x3_s2 = conv_t or saved[1]
  try:
    yield
  finally:
    models.conv3x3, models.conv_transpose3x3_s2 = saved


def layer_rows(rounds: int, repeats: int) -> list[dict]:
  """[{layer, form, fwd_ms, grad_ms, max_err}] with each form's max |y - reference|."""
  cases = []
  for layer, xs, ks, dx, ref, forms in LAYERS:
    x = jax.random.normal(jax.random.key(0), xs)
    k = 0.1 * jax.random.normal(jax.random.key(1), ks)
    g = jax.random.normal(jax.random.key(2), ref(x, k).shape)
    for form, fn in forms.items():
      fwd = jax.jit(fn)
      grad = jax.jit(jax.value_and_grad(lambda x, k, fn=fn, g=g: jnp.sum(fn(x, k) * g), (0, 1) if dx else 1))
      err = float(jnp.max(jnp.abs(fwd(x, k) - ref(x, k))))
      cases.append(dict(layer=layer, form=form, err=err, f=(lambda f=fwd, x=x, k=k: f(x, k)),
                        g=(lambda f=grad, x=x, k=k: f(x, k)), fwd=[], grad=[]))
  for _ in range(rounds):
    for c in cases:
      c["fwd"].append(1e3 * common.median_seconds(c["f"], repeats))
      c["grad"].append(1e3 * common.median_seconds(c["g"], repeats))
  return [dict(layer=c["layer"], form=c["form"], fwd_ms=float(np.median(c["fwd"])), grad_ms=float(np.median(c["grad"])),
               max_err=c["err"]) for c in cases]


def step_rows(rounds: int, x, y) -> list[dict]:
  """[{form, ms, ms_min, compile_s}]: ms per step of the real train chunk (S = 1, an epoch per call)."""
  config = common.load_config("conv", num_seeds=1, **{"train.steps_per_call": 0})
  progs = {}
  for name, fns in STEPS.items():
    with conv_functions(*fns):
      progs[name] = common.compile_program(config, x, y)
  spe = next(iter(progs.values())).program.steps_per_epoch
  times = {n: [] for n in progs}
  for _ in range(rounds):
    for n, c in progs.items():
      times[n].append(1e3 * common.time_window(c, x, y, spe, 3) / spe)
  return [dict(form=n, ms=float(np.median(t)), ms_min=float(np.min(t)), compile_s=progs[n].compile_s)
          for n, t in times.items()]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
  p.add_argument("--repeats", type=int, default=40, help="calls per layer timing per round (median)")
  p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "CONV_STEP.md"))
  args = p.parse_args(argv)
  info = common.machine()
  t0 = time.perf_counter()
  x, y = common.protocol_data()
  layers = layer_rows(args.rounds, args.repeats)
  steps = step_rows(args.rounds, x, y)
  torch_ms = {}
  if torch_ref.available():
    images, labels = np.asarray(x), np.asarray(y)
    for n in sorted({1, os.cpu_count() or 1}):
      torch_ms[n] = 1e3 * torch_ref.epoch_seconds("conv", images, labels, n, repeats=args.rounds) / (len(images) // B)
  best_torch = min(torch_ms.values()) if torch_ms else float("nan")
  lines = ["# The conv step on XLA:CPU: matmul forms of its convolutions (generated by `python -m benchmarks.conv_step`)", "",
           "| machine | |", "|---|---|", *[f"| {k} | {v} |" for k, v in info.items()],
           f"| run time | {time.perf_counter() - t0:.0f} s |", "",
           "Regenerate: `flock /work/heavy.lock python -m benchmarks.conv_step` (see the module docstring).", "",
           f"## Whole step: configs/conv.py, S = 1, batch 128, steps_per_call = 0 (median of {args.rounds} interleaved "
           "rounds of 3 epochs; PyTorch eager in the same process, best of its thread counts)", "",
           "| form | ms per step (median) | min of rounds | compile s | x PyTorch |", "|---|---|---|---|---|"]
  lines += [f"| {r['form']} | {r['ms']:.2f} | {r['ms_min']:.2f} | {r['compile_s']:.2f} | {best_torch / r['ms']:.2f} |"
            for r in steps]
  lines += [f"| PyTorch eager, {n} thread(s) | {ms:.2f} | | | |" for n, ms in torch_ms.items()]
  lines += ["", f"## Each layer alone (jit, batch 128; median of {args.rounds} interleaved rounds of {args.repeats} calls)", "",
            "forward + backward = value_and_grad of <y, g> in the kernel (and in x, except the first layer, whose "
            "input is the data). max err = max |y - lax.conv_general_dilated / lax.conv_transpose|.", "",
            "| layer | form | forward ms | forward + backward ms | max err |", "|---|---|---|---|---|"]
  lines += [f"| {r['layer']} | {r['form']} | {r['fwd_ms']:.3f} | {r['grad_ms']:.3f} | {r['max_err']:.1e} |" for r in layers]
  common.emit(lines, args.out)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
