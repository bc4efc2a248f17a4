"""Study 12: sparse autoencoders for interpretability: known features recovered, and a frontier on real activations.

Part 1, synthetic data with known ground truth (Sharkey et al. 2022, "Taking features out of superposition
with sparse autoencoders"; Elhage et al. 2022, "Toy models of superposition"): F unit feature directions
in D < F dimensions, each example the sum of the features it has (each present with probability
active / F, magnitude U(0, 1); `jaxae.sae.synthetic_features`). Each activation (relu + L1, topk + AuxK,
batchtopk, jumprelu) trains all its seeds in one program; a feature's recovery is its largest cosine
similarity with any decoder row, averaged over features (mean max cosine similarity), mean ± std over
seeds, beside a random dictionary of the same size.

Part 2, real activations: an MLP classifier 784-256-10 (ReLU; flax + optax, Adam 1e-3, batch 128) trained
here on the 5,000 embedded MNIST images; its 256 hidden activations are dumped to .npy shards
(`<out>/acts/*.npy` for the training images, `<out>/acts_test/test.npy` for the MNIST test set). SAEs with
m = 8 x 256 latents train on the former and are evaluated on the latter: TopK over k (one compiled group
per k, all seeds in it) and ReLU + L1 over the coefficient (every coefficient x seed in one program); the
held-out L0-FVU frontier with error bars over seeds. Then TopK at k=8 with the AuxK coefficient swept in one
program: dead latents and FVU.

Part 3, Matryoshka against TopK and BatchTopK on the same activations (Bussmann et al. 2025, "Learning
Multi-Level Features with Matryoshka Sparse Autoencoders"): the same k for all three, Matryoshka's nested
prefixes `MATRYOSHKA_WIDTHS` of the m = 2048 latents; the held-out L0-FVU frontier, and the FVU of each
prefix alone (the code's latents beyond the prefix set to 0, decoded with the full decoder), which the
nested loss is meant to keep low.

  python -m experiments.sae --out=out/sae [--seeds=5] [--frontier_seeds=3] [--smoke] [--parts=all]
  python -m jaxae.main --config=configs/sae.py --config.data.source='npy:out/sae/acts/*.npy' \
      --workdir=runs/sae --config.sweep='{"sae.k": [16, 32, 64]}'   # the same activations from the CLI
"""

from __future__ import annotations

import glob
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxae
from experiments import common
from jaxae import data as data_lib
from jaxae import analysis, plots, sae

# Part 1: the instance, and each activation's settings (chosen on another instance, data seed 1).
SYNTHETIC = dict(dim=32, features=128, active=3.0, train=16384, eval=4096)
SYNTHETIC_SMOKE = dict(dim=8, features=16, active=2.0, train=1024, eval=256)
ACTIVATIONS = {  # activation -> config overrides
    "relu": {"sae.l1_coefficient": 3.0},
    "topk": {"sae.k": 3},
    "batchtopk": {"sae.k": 3},
    "jumprelu": {"sae.l0_coefficient": 3.0, "sae.jumprelu_init_threshold": 0.5, "sae.jumprelu_bandwidth": 0.1},
}
SMOKE_ACTIVATIONS = ("topk", "jumprelu")  # --smoke trains two of them (the others' code is unit-tested)
# Part 2: the frontier's knobs.
TOPK_KS = (4, 8, 16, 32, 64)
L1_COEFFICIENTS = (0.3, 0.6, 1.0, 2.0, 3.0)
AUXK_COEFFICIENTS = (0.0, 1 / 32, 1.0)  # at k = AUXK_K, one program
AUXK_K = 8
MATRYOSHKA_KS = (8, 16, 32, 64)
MATRYOSHKA_WIDTHS = (64, 256, 1024)  # nested prefixes of m = 8 x 256 = 2048 latents (m is the last level)
MATRYOSHKA_LINES = ("topk", "batchtopk", "matryoshka_batchtopk")
MNIST_EPOCHS = 40
HIDDEN = 256


def sae_config(args, source: str, eval_source: str, epochs: int, expansion: int, seeds: int):
  config = common.load_config("sae")
  config.data.source = f"npy:{source}"
  config.data.eval_source = f"npy:{eval_source}"
  config.num_seeds = seeds
  config.model.expansion = expansion
  config.train.epochs = 1 if args.smoke else epochs
  config.train.eval_every = config.train.epochs
  config.train.batch_size = 64 if args.smoke else 256
  config.train.progress = False
  config.train.figures = not args.smoke
  config.sae.dead_window = 20_000
  return config


def _set(config, values: dict):
  for key, value in values.items():
    section, leaf = key.split(".")
    config[section][leaf] = value
  return config


# --- part 1 -----------------------------------------------------------------------------------------

def synthetic(args, out: str) -> tuple[str, dict]:
  spec = SYNTHETIC_SMOKE if args.smoke else SYNTHETIC
  x, directions = sae.synthetic_features(spec["train"] + spec["eval"], spec["dim"], spec["features"], spec["active"],
                                         seed=0)
  folder = os.path.join(out, "synthetic")
  os.makedirs(folder, exist_ok=True)
  np.save(os.path.join(folder, "train.npy"), x[:spec["train"]])
  np.save(os.path.join(folder, "eval.npy"), x[spec["train"]:])
  np.save(os.path.join(folder, "directions.npy"), directions)
  expansion = spec["features"] // spec["dim"]  # m = F latents
  rng = np.random.default_rng(1)
  random = [sae.max_cosine_recovery(directions, rng.standard_normal((expansion * spec["dim"], spec["dim"]))).mean()
            for _ in range(args.seeds)]
  rows, numbers = [], {"instance": spec, "random_dictionary": random, "activations": {}}
  for act, overrides in ACTIVATIONS.items():
    if args.smoke and act not in SMOKE_ACTIVATIONS:
      continue
    config = sae_config(args, os.path.join(folder, "train.npy"), os.path.join(folder, "eval.npy"), 60, expansion,
                        args.seeds)
    config.sae.activation = act
    config.train.batch_size = 64 if args.smoke else 128
    _set(config, overrides)
    workdir = os.path.join(out, "runs", f"synthetic_{act}")
    summary = common.ensure_trained(config, workdir)
    run = jaxae.load_run(workdir)
    recovery = [float(sae.max_cosine_recovery(directions, run.params["params"]["W_dec"][i]).mean())
                for i in range(len(run.members))]
    ev = summary["settings"][0]["eval"]
    numbers["activations"][act] = {"overrides": overrides, "recovery_per_seed": recovery,
                                   "l0": ev["l0"]["per_seed"], "fvu": ev["fvu"]["per_seed"],
                                   "dead_fraction": ev["dead_fraction"]["per_seed"]}
    knob = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())
    rows.append([act, knob, len(recovery), common.fmt(*common.mean_std(recovery), 3),
                 common.fmt(*common.mean_std(ev["l0"]["per_seed"]), 2), common.fmt(*common.mean_std(ev["fvu"]["per_seed"]), 3)])
  rows.append(["random dictionary", f"m={expansion * spec['dim']} Gaussian rows", len(random),
               common.fmt(*common.mean_std(random), 3), "", ""])
  text = (f"### Synthetic features: recovery (mean max cosine similarity, mean ± std over seeds)\n\n"
          f"D={spec['dim']}, F={spec['features']} features, {spec['active']:g} present per example on average, "
          f"{spec['train']} training / {spec['eval']} held-out examples, m=F={expansion * spec['dim']} latents, "
          f"{config.train.epochs} epochs of batch {config.train.batch_size}, Adam {config.optimizer.learning_rate:g}. "
          f"L0 and FVU on the held-out examples.\n\n"
          + common.markdown_table(["activation", "setting", "seeds", "recovery", "held-out L0", "held-out FVU"], rows))
  return text, numbers


# --- part 2 -----------------------------------------------------------------------------------------

class Classifier(nn.Module):
  hidden: int = HIDDEN

  @nn.compact
  def __call__(self, x, return_hidden: bool = False):
    h = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return h if return_hidden else nn.Dense(10)(h)


def train_classifier(train: data_lib.Split, epochs: int, seed: int = 0):
  """An MLP 784-256-10 trained with cross-entropy (Adam 1e-3, batch 128); returns its params."""
  model, tx = Classifier(), optax.adam(1e-3)
  x = jnp.asarray(data_lib.to_float(train.x))
  y = jnp.asarray(train.labels)
  params = model.init(jax.random.key(seed), x[:1])
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, idx):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x[idx]), y[idx]).mean()
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  batch = 128
  for epoch in range(epochs):
    perm = np.asarray(jax.random.permutation(jax.random.key(1000 + epoch), len(x)))
    for i in range(len(x) // batch):
      params, opt = step(params, opt, jnp.asarray(perm[i * batch:(i + 1) * batch]))
  return model, params


def dump_activations(args, out: str) -> dict:
  """Trains the classifier and writes its hidden activations; returns paths and the test accuracy."""
  train = data_lib.embedded_mnist()
  if args.smoke:
    train = data_lib.random_subset(train, 512, 0)
  test = common.test_split(args)
  model, params = train_classifier(train, 1 if args.smoke else 10)
  hidden = jax.jit(lambda x: model.apply(params, data_lib.to_float(x), return_hidden=True))
  logits = jax.jit(lambda x: model.apply(params, data_lib.to_float(x)))
  accuracy = float(np.mean(np.argmax(np.asarray(logits(test.x)), -1) == test.labels))
  acts_dir, test_dir = os.path.join(out, "acts"), os.path.join(out, "acts_test")
  os.makedirs(acts_dir, exist_ok=True)
  os.makedirs(test_dir, exist_ok=True)
  acts = np.asarray(hidden(train.x), np.float32)
  shards = 5
  for i, part in enumerate(np.array_split(acts, shards)):
    np.save(os.path.join(acts_dir, f"train_{i:03d}.npy"), part)
  test_acts = np.asarray(hidden(test.x), np.float32)
  np.save(os.path.join(test_dir, "test.npy"), test_acts)
  return {"train": os.path.join(acts_dir, "*.npy"), "test": os.path.join(test_dir, "test.npy"),
          "test_accuracy": accuracy, "train_shape": list(acts.shape), "test_shape": list(test_acts.shape),
          "active_fraction": float(np.mean(acts > 0))}


def _train_seconds(workdir: str) -> float:
  """The training time of a run, its groups included: the sum of its epochs' seconds in metrics.jsonl (so a
  reused finished run reports the time it took when it trained)."""
  total = 0.0
  for path in [os.path.join(workdir, "metrics.jsonl")] + sorted(glob.glob(os.path.join(workdir, "groups", "*",
                                                                                          "metrics.jsonl"))):
    if os.path.exists(path):
      with open(path) as f:
        total += sum(json.loads(line).get("seconds", 0.0) for line in f if line.strip())
  return total


def frontier(args, out: str, acts: dict) -> tuple[str, dict]:
  ks = (2, 4) if args.smoke else TOPK_KS
  coefficients = (1.0, 10.0) if args.smoke else L1_COEFFICIENTS
  lines = {"topk": ("sae.k", ks), "relu": ("sae.l1_coefficient", coefficients)}
  points, numbers, rows = [], {}, []
  for act, (key, values) in lines.items():
    config = sae_config(args, acts["train"], acts["test"], MNIST_EPOCHS, 8, args.frontier_seeds)
    config.sae.activation = act
    config.sweep = json.dumps({key: list(values)})
    workdir = os.path.join(out, "runs", f"mnist_{act}")
    result = jaxae.train_and_evaluate(config, workdir)
    seconds = _train_seconds(workdir)
    entries = ([(g["settings"][0], g["settings"][0]["setting"] or {key: v}) for g, v in
                zip(result["groups"].values(), values)] if "groups" in result
               else [(e, e["setting"]) for e in result["settings"]])
    numbers[act] = {"key": key, "seconds": seconds, "settings": []}
    for entry, setting in entries:
      ev = entry["eval"]
      value = setting[key]
      stats = {m: common.mean_std(ev[m]["per_seed"]) for m in ("l0", "fvu", "explained_variance", "dead_fraction",
                                                             "cosine_similarity")}
      numbers[act]["settings"].append({"value": value, "per_seed": {m: ev[m]["per_seed"] for m in stats},
                                       **{f"{m}_mean": s[0] for m, s in stats.items()},
                                       **{f"{m}_std": s[1] for m, s in stats.items()}})
      knob = f"k={value}" if act == "topk" else f"λ={value:g}"
      points.append(({"knob": knob, "activation": act}, {m: stats[m] for m in ("l0", "fvu")}))
      rows.append([act, f"{key.split('.')[-1]}={value}", len(ev["fvu"]["per_seed"]), common.fmt(*stats["l0"], 1),
                   common.fmt(*stats["fvu"], 4), common.fmt(*stats["dead_fraction"], 3),
                   common.fmt(*stats["cosine_similarity"], 3)])
  plots.frontier(points, ["knob", "activation"], os.path.join(out, "frontier_mnist.png"),
                 title="SAEs on MNIST MLP activations (256 -> 2048): held-out FVU vs L0, mean ± std over seeds",
                 names={"knob": "", "activation": ""})
  config = sae_config(args, acts["train"], acts["test"], MNIST_EPOCHS, 8, args.frontier_seeds)
  text = (f"### MNIST MLP hidden activations: held-out L0-FVU frontier (mean ± std over seeds)\n\n"
          f"Classifier 784-{HIDDEN}-10 (test accuracy {acts['test_accuracy']:.4f}); SAE training data: its hidden "
          f"activations on the {acts['train_shape'][0]} training images ({acts['active_fraction']:.0%} of the units "
          f"nonzero), held-out: on {acts['test_shape'][0]} MNIST test images. m = 8 x {HIDDEN} latents, "
          f"{config.train.epochs} epochs of batch {config.train.batch_size}, Adam {config.optimizer.learning_rate:g}, "
          f"inputs scaled to E||x||^2 = D. TopK: one compiled group per k; ReLU + L1: one program for every "
          f"coefficient x seed. Training time (all seeds, sum of the epochs' seconds): "
          + ", ".join(f"{a} {n['seconds']:.0f} s" for a, n in numbers.items()) + ".\n\n"
          + common.markdown_table(["activation", "setting", "seeds", "held-out L0", "held-out FVU", "dead fraction",
                                   "cos(x, x_hat)"], rows))
  return text, numbers


AUXK_EPOCHS = (5, 6, 10, 15, 20, 30, 40)  # epochs at which the training dead fraction is shown


def _dead_trajectory(workdir: str, epochs: int) -> tuple[list[int], list[list[float]]]:
  """Training dead fraction per member at the epochs of AUXK_EPOCHS that ran (from metrics.jsonl)."""
  shown = [e for e in AUXK_EPOCHS if e <= epochs] or [epochs]
  per_epoch = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if "train" in record and "dead_fraction" in record["train"]:
        per_epoch[record["epoch"]] = record["train"]["dead_fraction"]
  return shown, [per_epoch[e] for e in shown]


def _dead_gap(run, x: np.ndarray, k: int) -> list[dict]:
  """Per member, on the training activations with the final parameters: the latents that are in no
  example's TopK (dead), the median over them of their largest pre-activation on any example, and the
  median over examples of the k-th largest pre-activation (the bar a latent must clear to fire)."""
  xp = jnp.asarray(run.model.prepare(x), jnp.float32).reshape(len(x), -1)
  out = []
  for i in range(len(run.members)):
    p = jax.tree.map(lambda a: a[i], run.params)["params"]
    pi = np.asarray(sae.pre_activation(p, xp))
    kth = np.sort(pi, axis=1)[:, -k][:, None]
    dead = ~((pi >= kth) & (pi > 0)).any(axis=0)
    out.append({"dead": float(dead.mean()), "dead_max_pre_activation": float(np.median(pi.max(axis=0)[dead]))
                if dead.any() else None, "kth_pre_activation": float(np.median(kth))})
  return out


def _fmt_present(values: list) -> str:
  present = [v for v in values if v is not None]
  return common.fmt(*common.mean_std(present), 2) if present else "-"


def auxk_sweep(args, out: str, acts: dict) -> tuple[str, dict]:
  """TopK at k = AUXK_K with the AuxK coefficient swept in one program (a per-member hyperparameter), with
  the evidence for why AuxK does not lower the dead fraction here: the dead fraction over training and how
  far below the TopK bar the dead latents' pre-activations end."""
  config = sae_config(args, acts["train"], acts["test"], MNIST_EPOCHS, 8, args.frontier_seeds)
  config.sae.k = 2 if args.smoke else AUXK_K
  coefficients = (0.0, 1.0) if args.smoke else AUXK_COEFFICIENTS
  config.sweep = json.dumps({"sae.auxk_coefficient": list(coefficients)})
  workdir = os.path.join(out, "runs", "mnist_auxk")
  summary = common.ensure_trained(config, workdir)
  run = jaxae.load_run(workdir)
  x = np.concatenate([np.load(f, allow_pickle=False) for f in sorted(glob.glob(acts["train"]))])
  gaps = _dead_gap(run, x, config.sae.k)
  shown, trajectory = _dead_trajectory(workdir, config.train.epochs)
  rows, numbers = [], []
  for entry in summary["settings"]:
    tr, ev = entry["train"], entry["eval"]
    c = entry["setting"]["sae.auxk_coefficient"]
    idx = [i for i, mem in enumerate(run.members) if mem["setting"]["sae.auxk_coefficient"] == c]
    traj = [[t[i] for i in idx] for t in trajectory]
    gap = [gaps[i] for i in idx]
    numbers.append({"auxk_coefficient": c, "train_dead": tr["dead_fraction"]["per_seed"],
                    "eval_dead": ev["dead_fraction"]["per_seed"], "fvu": ev["fvu"]["per_seed"],
                    "auxk_loss": tr["auxk_loss"]["per_seed"], "sq_error": tr["sq_error"]["per_seed"],
                    "train_dead_by_epoch": dict(zip(shown, traj)), "final_params": gap})
    rows.append([f"{c:g}", len(ev["fvu"]["per_seed"]),
                 " → ".join(f"{np.mean(t):.2f}" for t in traj),
                 common.fmt(*common.mean_std(ev["dead_fraction"]["per_seed"]), 3),
                 common.fmt(*common.mean_std(ev["fvu"]["per_seed"]), 4),
                 common.fmt(*common.mean_std(tr["auxk_loss"]["per_seed"]), 2),
                 common.fmt(*common.mean_std(tr["sq_error"]["per_seed"]), 2),
                 _fmt_present([g["dead_max_pre_activation"] for g in gap]),
                 common.fmt(*common.mean_std([g["kth_pre_activation"] for g in gap]), 2)])
  text = (f"### AuxK coefficient at k={config.sae.k} (one program: coefficients x seeds)\n\n"
          f"Dead (training): latents silent for the last {config.sae.dead_window} examples, mean over each epoch's "
          f"steps, at epochs {', '.join(map(str, shown))}; dead (held-out): latents that fire on none of the test "
          f"activations. AuxK loss: ||e - W_dec z_aux||^2 on the training batches (reported, and trained only when "
          f"its coefficient is nonzero), beside ‖e‖² = ||x - x_hat||^2. Last two columns, with the final "
          f"parameters on the training activations: the median over dead latents (in no example's TopK) of their "
          f"largest pre-activation, and the median over examples of the {config.sae.k}th largest pre-activation, "
          f"the bar a latent must clear to fire.\n\n"
          + common.markdown_table(["AuxK coefficient", "seeds", "dead (training), by epoch", "dead (held-out)",
                                   "held-out FVU", "AuxK loss", "‖e‖²", "dead latents' max pre-act.",
                                   "TopK bar"], rows)
          + "\nAuxK raises the dead fraction here; this is the algorithm, not a bug (its gradient is tested "
          "against a hand-written formula, and the study's numbers do not change with SAELens's variant without "
          "the ReLU, nor much with k_aux = 16 instead of D/2 = 128: see experiments/README.md, study 12). Latents die early, "
          "with or without AuxK (epoch 5: the latents that fired on none of the first 20,000 examples). Without "
          "it, the dead latents keep their initial encoder rows; their pre-activations stay just under the TopK "
          "bar and some of them fire again as the live latents change. With it, AuxK "
          "trains them to reconstruct the residual e, which is small (FVU ~0.1) and shared among k_aux latents, "
          "so it sets their pre-activations to the residual's scale, far below the bar: AuxK explains half of "
          "‖e‖² while the latents it trains never enter the TopK. Adam scales each parameter's step by its own "
          "gradient history and these latents' parameters get gradient only from AuxK, so the coefficient "
          "(1/32 or 1) hardly matters. Gao et al. use AuxK against latents dying over long runs on fresh data; "
          "on 5,000 activations repeated for 40 epochs it does not revive them.\n")
  return text, numbers


def prefix_fvu(run, x: np.ndarray, widths) -> list[dict]:
  """Per member: the held-out FVU (sum ||x - x_hat||^2 / sum ||x - mean x||^2, Gao et al. 2024) of the
  reconstruction from the first w latents of the inference code alone, for each w in `widths`."""
  xp = np.asarray(run.model.prepare(x), np.float32).reshape(len(x), -1)
  out = []
  for i in range(len(run.members)):
    params = analysis.member_params(run.params, i)
    z = analysis.encode(run.model, params, x, run.config)
    row = {}
    for w in widths:
      x_hat = analysis.decode(run.model, params, np.where(np.arange(z.shape[1]) < w, z, 0.0), run.config)
      row[w] = float(sae.fvu(xp, x_hat.reshape(len(x), -1)))
    out.append(row)
  return out


def matryoshka_frontier(args, out: str, acts: dict) -> tuple[str, dict]:
  """Part 3: TopK, BatchTopK and Matryoshka BatchTopK at the same ks, every seed of a k in one program."""
  ks = (2, 4) if args.smoke else MATRYOSHKA_KS
  widths = (8, 32) if args.smoke else MATRYOSHKA_WIDTHS
  x_test = np.load(acts["test"], allow_pickle=False)
  points, numbers, rows = [], {}, []
  for act in MATRYOSHKA_LINES:
    config = sae_config(args, acts["train"], acts["test"], MNIST_EPOCHS, 8, args.frontier_seeds)
    config.sae.activation = act
    if act == "matryoshka_batchtopk":
      config.sae.matryoshka_widths = tuple(widths)
    config.sweep = json.dumps({"sae.k": list(ks)})
    workdir = os.path.join(out, "runs", f"mnist_{act}_vs_matryoshka" if act != "matryoshka_batchtopk" else
                           "mnist_matryoshka")
    result = common.ensure_trained(config, workdir)
    seconds = _train_seconds(workdir)
    numbers[act] = {"seconds": seconds, "settings": []}
    for (name, group), k in zip(result["groups"].items(), ks):
      ev = group["settings"][0]["eval"]
      run = jaxae.load_run(os.path.join(workdir, "groups", name))
      prefixes = prefix_fvu(run, x_test, widths)
      stats = {m: common.mean_std(ev[m]["per_seed"]) for m in ("l0", "fvu", "dead_fraction")}
      prefix_stats = {w: common.mean_std([p[w] for p in prefixes]) for w in widths}
      numbers[act]["settings"].append({"k": k, "per_seed": {m: ev[m]["per_seed"] for m in stats},
                                       "prefix_fvu_per_seed": {str(w): [p[w] for p in prefixes] for w in widths}})
      points.append(({"knob": f"k={k}", "activation": act}, {m: stats[m] for m in ("l0", "fvu")}))
      rows.append([act, k, len(ev["fvu"]["per_seed"]), common.fmt(*stats["l0"], 1), common.fmt(*stats["fvu"], 4)]
                  + [common.fmt(*prefix_stats[w], 3) for w in widths] + [common.fmt(*stats["dead_fraction"], 3)])
  plots.frontier(points, ["knob", "activation"], os.path.join(out, "frontier_matryoshka.png"),
                 title="Matryoshka vs TopK / BatchTopK on MNIST MLP activations: held-out FVU vs L0",
                 names={"knob": "", "activation": ""})
  config = sae_config(args, acts["train"], acts["test"], MNIST_EPOCHS, 8, args.frontier_seeds)
  text = (f"### Matryoshka BatchTopK against TopK and BatchTopK (mean ± std over seeds)\n\n"
          f"The activations, m = 8 x {HIDDEN} latents and training of the frontier above; Matryoshka's nested "
          f"prefixes {', '.join(map(str, widths))} (and all {8 * HIDDEN}). FVU of a prefix: the held-out "
          f"reconstruction from the code's first w latents alone. Training time (all seeds and ks, sum of the "
          f"epochs' seconds): " + ", ".join(f"{a} {n['seconds']:.0f} s" for a, n in numbers.items()) + ".\n\n"
          + common.markdown_table(["activation", "k", "seeds", "held-out L0", "held-out FVU"]
                                  + [f"FVU, first {w}" for w in widths] + ["dead fraction"], rows))
  return text, numbers


PARTS = ("synthetic", "frontier", "auxk", "matryoshka")


def main(argv=None):
  def flags(p):
    p.add_argument("--frontier_seeds", type=common.count0, default=0, help="seeds per MNIST setting (default 3, smoke 2)")
    p.add_argument("--parts", default="all", help="'all', or a comma-separated subset of synthetic,frontier,auxk,"
                   "matryoshka (the activations are dumped whenever a part needs them)")

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  args.frontier_seeds = args.frontier_seeds or (2 if args.smoke else 3)
  parts = PARTS if args.parts == "all" else tuple(p for p in args.parts.split(",") if p)
  unknown = sorted(set(parts) - set(PARTS))
  if unknown or not parts:
    raise SystemExit(f"--parts={args.parts!r}: choose 'all' or from {', '.join(PARTS)}")
  started = time.perf_counter()
  texts, numbers = [], {}
  if "synthetic" in parts:
    text, numbers["synthetic"] = synthetic(args, args.out)
    texts.append(text)
  if set(parts) - {"synthetic"}:
    numbers["activations"] = acts = dump_activations(args, args.out)
  for name, part in (("frontier", frontier), ("auxk", auxk_sweep), ("matryoshka", matryoshka_frontier)):
    if name in parts:
      text, numbers[name] = part(args, args.out, acts)
      texts.append(text)
  common.write_results(args.out, "Study 12: sparse autoencoders", texts, numbers, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
