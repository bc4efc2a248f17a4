"""Compares jaxae's training losses of the sae_archs architectures with SAELens's own training classes.

Gated (GatedTrainingSAE) and Matryoshka BatchTopK (MatryoshkaBatchTopKTrainingSAE, rescale_acts_by_decoder_norm
off as jaxae, no dead latents so that both AuxK terms are 0) on random parameters and inputs: the total loss
and its terms, and Matryoshka's first threshold estimate (SAELens's EMA with rate 1 is the batch's smallest
kept activation, jaxae's first estimate). Two steps, each with only its own side's imports:

  python -m experiments.saelens_loss_check dump --out=/tmp/losscheck                  # jaxae's environment
  /path/to/saelens-venv/bin/python experiments/saelens_loss_check.py check --out=/tmp/losscheck

Step 2 prints both sides and exits 1 when a relative difference exceeds --tol.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

D, M, B, K, WIDTHS, L1 = 6, 12, 16, 2, (3, 7), 0.7


def dump(out: str) -> int:
  import jax.numpy as jnp

  from jaxae import configs
  from jaxae.config_files.sae import get_config
  from jaxae.variants import sae as sae_variant

  rng = np.random.default_rng(0)
  x = (rng.standard_normal((B, D)) * 2).astype(np.float32)
  f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
  cases = {"gated": {"W_enc": f(D, M), "b_gate": f(M) * 0.3, "r_mag": f(M) * 0.3, "b_mag": f(M) * 0.3,
                     "W_dec": f(M, D), "b_dec": f(D)},
           "matryoshka_batchtopk": {"W_enc": f(D, M), "b_enc": f(M) * 0.1, "W_dec": f(M, D), "b_dec": f(D),
                                    "threshold": np.float32(0)}}
  hp = {"l1_coefficient": jnp.float32(L1), "l0_coefficient": jnp.float32(0), "auxk_coefficient": jnp.float32(1),
        "jumprelu_bandwidth": jnp.float32(0.05)}
  for activation, p in cases.items():
    config = get_config()
    config.sae.activation, config.sae.k, config.sae.matryoshka_widths = activation, K, WIDTHS
    config.model.expansion, config.sae.decoder_norm = M // D, "free"
    configs.validate(config)
    net = sae_variant.network(config, (D,))
    aux = sae_variant.init_aux(config, net, (D,))
    loss, metrics = sae_variant.make_loss(config, net)({"params": {k: jnp.asarray(v) for k, v in p.items()}}, hp,
                                                       {"x": jnp.asarray(x), "aux": aux}, None, True)
    terms = {k: float(v) for k, v in metrics.items() if k in ("sq_error", "l1", "gated_aux_loss", "auxk_loss")
             or k.startswith("sq_error_")}
    if "_aux" in metrics and "threshold" in metrics["_aux"]:
      terms["threshold"] = float(metrics["_aux"]["threshold"])
    np.savez(os.path.join(out, f"{activation}.npz"), x=x, loss=float(loss), terms=repr(terms), **p)
  print(f"jaxae's losses in {out}")
  return 0


def check(out: str, tol: float) -> int:
  import torch
  from sae_lens.saes.gated_sae import GatedTrainingSAE, GatedTrainingSAEConfig
  from sae_lens.saes.matryoshka_batchtopk_sae import (MatryoshkaBatchTopKTrainingSAE,
                                                      MatryoshkaBatchTopKTrainingSAEConfig)
  from sae_lens.saes.sae import TrainStepInput

  worst = 0.0
  for activation in ("gated", "matryoshka_batchtopk"):
    c = np.load(os.path.join(out, f"{activation}.npz"))
    if activation == "gated":
      sae = GatedTrainingSAE(GatedTrainingSAEConfig(d_in=D, d_sae=M, l1_coefficient=L1))
    else:
      sae = MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
          d_in=D, d_sae=M, k=K, matryoshka_widths=[*WIDTHS, M], rescale_acts_by_decoder_norm=False,
          topk_threshold_lr=1.0))
    state = sae.state_dict()
    state.update({k: torch.from_numpy(c[k]) for k in state if k in c.files})
    sae.load_state_dict(state)
    step = TrainStepInput(sae_in=torch.from_numpy(c["x"]), coefficients={"l1": L1},
                          dead_neuron_mask=torch.zeros(M, dtype=torch.bool), n_training_steps=0, is_logging_step=False)
    with torch.no_grad():
      output = sae.training_forward_pass(step)
    theirs, ours = float(output.loss), float(c["loss"])
    rel = abs(theirs - ours) / abs(ours)
    worst = max(worst, rel)
    extra = f", threshold {float(sae.topk_threshold):.6g}" if hasattr(sae, "topk_threshold") else ""
    losses = {k: round(float(v), 5) for k, v in output.losses.items()}
    print(f"{activation}: SAELens {type(sae).__name__} loss {theirs:.7g} {losses}"
          f"{extra}\n  jaxae loss {ours:.7g} {c['terms']}\n  relative difference {rel:.2e}")
  return 0 if worst <= tol else 1


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("step", choices=("dump", "check"))
  p.add_argument("--out", required=True)
  p.add_argument("--tol", type=float, default=1e-5)
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  return dump(args.out) if args.step == "dump" else check(args.out, args.tol)


if __name__ == "__main__":
  sys.exit(main())
