"""Reads jaxae's SAELens export back with SAELens itself and compares codes and reconstructions.

SAELens (with transformer-lens, datasets, ...) is not a jaxae dependency and may need its own virtual
environment, so this runs in two steps, each with only its own side's imports:

  # 1. jaxae's environment: export every member and write jaxae's codes and reconstructions of a sample
  python -m experiments.saelens_check dump --workdir=runs/sae --sample='npy:acts/*.npy' --out=/tmp/check \
      [--hook_name=blocks.0.hook_resid_pre --model_name=NAME]
  # 2. an environment with sae-lens (pip install sae-lens torch): load each folder with SAE.load_from_disk
  python experiments/saelens_check.py check --out=/tmp/check

Step 2 prints, per member, the largest absolute difference of the codes and reconstructions on the raw
sample (the run's normalization is folded into the exported weights; jaxae's side is brought back to
raw units with Normalizer.inverse) and whether the active latents agree. It asserts that the hook and
model names of step 1 are SAELens's `sae.cfg.metadata.hook_name` / `.model_name`, and reads
sparsity.safetensors with SAELens's own loader (`sae_lens_huggingface_loader`, its download pointed at the
folder) against log10(feature_density.npy + 1e-10). With a hook name of the form blocks.<l>.hook_*, it
splices the SAE into a randomly initialized HookedSAETransformer (no download: a config, no weights) and
checks that `add_sae` attached it there and that the hook's output is the SAE's reconstruction of the
hook's input; it also shows that without a hook name `add_sae` attaches nothing. It exits 1 when any
difference exceeds --tol or any of these checks fails.
A transcoder's reconstruction is of its target, in the target's raw units, and is SAELens's forward()
(which adds a skip transcoder's x @ W_skip.T).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def dump(args) -> int:
  import jaxae
  from jaxae import analysis, export
  from jaxae import data as data_lib

  splice = {"hook_name": args.hook_name or None, "model_name": args.model_name or None}
  folders = export.export_saelens(args.workdir, os.path.join(args.out, "saelens"), splice)
  x = np.asarray(data_lib.load_source(args.sample).x[: args.rows], np.float32)
  np.save(os.path.join(args.out, "x.npy"), x)
  manifest = []
  for folder in folders:
    meta = json.load(open(os.path.join(folder, "cfg.json")))["metadata"]
    run = jaxae.load_run(meta["jaxae_workdir"])
    i = next(j for j, m in enumerate(run.members) if m["seed"] == meta["jaxae_seed"] and m["setting"] == meta["jaxae_setting"])
    params = analysis.member_params(run.params, i)
    z = analysis.encode(run.model, params, x, run.config)
    x_hat = analysis.reconstruct(run.model, params, x, run.config)
    out_normalizer = run.model.normalizer if run.model.target is None else run.model.target.normalizer
    if out_normalizer is not None:  # back to raw units (a transcoder's: its target's)
      x_hat = out_normalizer.inverse(x_hat)
    name = f"member{len(manifest)}"
    np.save(os.path.join(args.out, f"{name}_z.npy"), z)
    np.save(os.path.join(args.out, f"{name}_x_hat.npy"), x_hat)
    manifest.append({"folder": folder, "name": name, "hook_name": meta["hook_name"], "model_name": meta["model_name"]})
  json.dump(manifest, open(os.path.join(args.out, "manifest.json"), "w"), indent=1)
  print(f"exported {len(folders)} member(s); reference outputs in {args.out}")
  return 0


def saelens_sparsity(folder):
  """The log sparsity SAELens's own loader reads for the SAE in `folder`: sae_lens_huggingface_loader with its
  Hugging Face download pointed at the folder's files (nothing is downloaded)."""
  from sae_lens.loading import pretrained_sae_loaders as loaders

  original = loaders.hf_hub_download
  loaders.hf_hub_download = lambda repo_id, filename, **kwargs: filename  # '<folder>/<file>': the local file
  try:
    _, _, log_sparsity = loaders.sae_lens_huggingface_loader("local", str(folder), device="cpu")
  finally:
    loaders.hf_hub_download = original
  return log_sparsity


def splice(sae, d_in: int) -> str:
  """Attaches `sae` to a randomly initialized HookedSAETransformer at sae.cfg.metadata.hook_name (layers
  enough for blocks.<l>, d_model = d_in) and compares the hook's output with the SAE's reconstruction of
  its input. Returns a line of what it found; raises AssertionError when splicing does not work."""
  import copy

  import torch
  from sae_lens import HookedSAETransformer
  from transformer_lens import HookedTransformerConfig

  hook = sae.cfg.metadata.hook_name
  layer = int(hook.split(".")[1])
  heads = next(h for h in (4, 3, 2, 1) if d_in % h == 0)
  torch.manual_seed(0)
  model = HookedSAETransformer(HookedTransformerConfig(
      n_layers=layer + 1, d_model=d_in, n_heads=heads, d_head=d_in // heads, d_mlp=4 * d_in, d_vocab=50, n_ctx=16,
      act_fn="relu", normalization_type="LN"))
  tokens = torch.randint(0, 50, (3, 16))
  with torch.no_grad():
    clean_logits, clean = model.run_with_cache(tokens, names_filter=hook)
    model.add_sae(sae)
    assert hook in model.acts_to_saes, f"add_sae attached nothing at {hook}"
    logits, cache = model.run_with_cache(tokens)
    x = clean[hook]
    sae_in = cache[f"{hook}.hook_sae_input"]  # hook_z: flattened over the heads
    assert torch.equal(sae_in, x.reshape(sae_in.shape)), "the SAE did not read the hook's activations"
    out = cache[f"{hook}.hook_sae_output"]  # what flows on from the hook
    d = float((out - sae.decode(sae.encode(x))).abs().max())
    assert d < 1e-4, f"the hook's output is not the SAE's reconstruction (max |diff| {d:.2e})"
    moved = float((logits - clean_logits).abs().max())
    assert moved > 0, "splicing the SAE in did not change the model's output"
    model.reset_saes()
    model.add_sae(sae, use_error_term=True)  # x_hat + (x - x_hat): the model's own output again
    d_err = float((model(tokens) - clean_logits).abs().max())
    assert d_err < 1e-4, f"with the error term the logits moved by {d_err:.2e}"
    model.reset_saes()
    anonymous = copy.deepcopy(sae)
    anonymous.cfg.metadata.hook_name = None
    model.add_sae(anonymous)  # SAELens logs "No hook found for None. Skipping."
    nothing = not model.acts_to_saes
  assert nothing, "add_sae attached an SAE without a hook name"
  return (f"spliced at {hook} of a random {layer + 1}-layer HookedSAETransformer: hook output = SAE(x) to "
          f"{d:.1e}, logits moved by up to {moved:.3g} (with the error term: {d_err:.1e}); without a hook name "
          f"add_sae attached nothing: {nothing}")


def check(args) -> int:
  import torch
  from sae_lens import SAE

  manifest = json.load(open(os.path.join(args.out, "manifest.json")))
  x = torch.from_numpy(np.load(os.path.join(args.out, "x.npy")))
  worst, failures = 0.0, []
  for entry in manifest:
    folder = entry["folder"]
    sae = SAE.load_from_disk(folder, device="cpu")
    hook_z = sae.cfg.reshape_activations == "hook_z"  # takes (..., heads, d_head): the sample as one head
    with torch.no_grad():
      z = sae.encode(x[:, None, :] if hook_z else x)
      x_hat = sae.decode(z).reshape(len(x), -1)
      if "transcoder" in sae.cfg.architecture():  # forward() adds a skip transcoder's x @ W_skip.T
        x_hat = sae.forward(x)
        x_hat = x_hat[0] if isinstance(x_hat, tuple) else x_hat
    z_ref = np.load(os.path.join(args.out, f"{entry['name']}_z.npy"))
    x_ref = np.load(os.path.join(args.out, f"{entry['name']}_x_hat.npy"))
    dz, dx = float(np.abs(z.numpy() - z_ref).max()), float(np.abs(x_hat.numpy() - x_ref).max())
    same = bool(np.array_equal(z.numpy() > 0, z_ref > 0))
    worst = max(worst, dz, dx)
    print(f"{folder}: {type(sae).__name__}, max |dz| {dz:.2e}, max |dx_hat| {dx:.2e} "
          f"(|x_hat| up to {np.abs(x_ref).max():.3g}), same active latents: {same}")
    meta = sae.cfg.metadata
    names = (meta.hook_name, meta.model_name) == (entry["hook_name"], entry["model_name"])
    print(f"  metadata: hook_name {meta.hook_name!r}, model_name {meta.model_name!r}, context_size "
          f"{meta.context_size!r}, prepend_bos {meta.prepend_bos!r}: as exported: {names}")
    if not names:
      failures.append(f"{folder}: metadata {(meta.hook_name, meta.model_name)} != {(entry['hook_name'], entry['model_name'])}")
    density_path = os.path.join(folder, "feature_density.npy")
    if os.path.exists(density_path):
      log_sparsity = saelens_sparsity(folder)
      density = np.load(density_path)
      ds = float(np.abs(log_sparsity.numpy().astype(np.float64) - np.log10(density.astype(np.float64) + 1e-10)).max())
      ok = tuple(log_sparsity.shape) == (sae.cfg.d_sae,) and ds < 1e-5
      print(f"  sparsity.safetensors through SAELens's loader: shape {tuple(log_sparsity.shape)}, max |log10 density "
            f"- sparsity| {ds:.1e}, dead (density 0): {int((density == 0).sum())} of {sae.cfg.d_sae}, "
            f"mean density {density.mean():.3g}")
      if not ok:
        failures.append(f"{folder}: sparsity {tuple(log_sparsity.shape)}, difference {ds:.2e}")
    else:
      failures.append(f"{folder}: no feature_density.npy / sparsity.safetensors")
    hook = meta.hook_name
    if "transcoder" in sae.cfg.architecture():  # it reads one hook and writes another: no same-hook splice
      print("  splice: not tried (a transcoder maps one hook's input to another hook's output; add_sae replaces the "
            "activation at its own hook)")
    elif hook and len(hook.split(".")) >= 2 and hook.split(".")[0] == "blocks" and hook.split(".")[1].isdigit():
      try:
        print(f"  {splice(SAE.load_from_disk(folder, device='cpu'), sae.cfg.d_in)}")  # fresh: hook_z sets d_head once
      except AssertionError as e:
        failures.append(f"{folder}: {e}")
  for f in failures:
    print(f"FAILED {f}")
  return 0 if worst <= args.tol and not failures else 1


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("step", choices=("dump", "check"))
  p.add_argument("--out", required=True, help="folder for the export and the reference outputs")
  p.add_argument("--workdir", default="", help="dump: the jaxae run")
  p.add_argument("--sample", default="", help="dump: inputs to compare on, a data.source ('npy:acts/*.npy')")
  p.add_argument("--rows", type=int, default=1000, help="dump: rows of the sample")
  p.add_argument("--hook_name", default="", help="dump: the hook name to export with (default: the run's sae.hook_name)")
  p.add_argument("--model_name", default="", help="dump: the model name to export with (default: sae.model_name)")
  p.add_argument("--tol", type=float, default=1e-4, help="check: largest absolute difference accepted")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  return dump(args) if args.step == "dump" else check(args)


if __name__ == "__main__":
  sys.exit(main())
