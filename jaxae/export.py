"""Export trained sparse autoencoders to other tools' on-disk formats: `python -m jaxae.export`.

    python -m jaxae.export --workdir=runs/sae --format=saelens [--out=DIR]

writes one folder per member (every seed of every sweep setting, every group of a sweep with static keys)
under DIR (default `<workdir>/export/saelens`), named `<group>/<setting>seed<s>`, each readable by
`sae_lens.SAE.load_from_disk(folder)`.

The SAELens format, as SAELens 6.18.0 writes and reads it (`SAE.save_model` / `sae_lens_disk_loader`
in sae_lens/saes/sae.py and sae_lens/loading/pretrained_sae_loaders.py, read at commit 91ca16c):
  sae_weights.safetensors  W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in), b_dec (d_in,) float32,
                           and threshold (d_sae,) for the 'jumprelu' architecture
  cfg.json                 d_in, d_sae, dtype, device, apply_b_dec_to_input, normalize_activations,
                           reshape_activations, architecture ('standard' | 'topk' | 'jumprelu'), k and
                           rescale_acts_by_decoder_norm for 'topk', and metadata (sae_lens_version >= 6
                           marks the current format; jaxae adds its provenance)
jaxae's 'relu' SAEs are 'standard', 'topk' is 'topk', 'jumprelu' is 'jumprelu' (threshold =
exp(log_threshold)), and 'batchtopk' is 'jumprelu' with every threshold at the estimated global one, as
SAELens saves its own BatchTopK SAEs. The run's input normalization (data.Normalizer, any per-feature
affine map x' = (x - offset) / scale) is folded into the weights, so the exported SAE takes the raw
activations (normalize_activations='none'), as SAELens's `fold_activation_norm_scaling_factor` does:
W_enc / scale (rows), W_dec * scale (columns), b_dec -> offset + scale * b_dec; codes are unchanged.
Transcoders (data.target_source) export as SAELens's transcoder classes, both normalizations folded
(`jaxae.transcoder`: architectures, d_out, W_skip); 'topk' transcoders have no SAELens class (ExportError).
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

from jaxae import errors, files, transcoder

SAELENS_FORMAT_VERSION = "6.18.0"  # the SAELens release whose save/load code this format follows
ARCHITECTURES = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}
FORMATS = ("saelens",)


class ExportError(errors.BadInput, ValueError):
  """A workdir that cannot be exported (no checkpoint, not an SAE, an output path through a link): exit 2."""


def fold_normalizer(params: dict, normalizer, data_shape) -> dict:
  """One member's SAE arrays (numpy) with the input normalization x' = (x - offset) / scale folded in.

  The SAE on normalized inputs, pi = (x' - b_dec) W_enc + b_enc and x_hat' = z W_dec + b_dec, equals the
  SAE on raw inputs with W_enc / scale[:, None], W_dec * scale[None, :] and b_dec -> offset + scale * b_dec
  (its reconstruction is then scale * x_hat' + offset). normalizer None: the arrays as they are.
  """
  out = {k: np.asarray(v, np.float32) for k, v in params.items()}
  if normalizer is None or normalizer.kind == "none":
    return out
  d = math.prod(data_shape)
  offset = np.broadcast_to(np.asarray(normalizer.offset, np.float64), tuple(data_shape)).reshape(d)
  scale = np.broadcast_to(np.asarray(normalizer.scale, np.float64), tuple(data_shape)).reshape(d)
  out["W_enc"] = (np.asarray(params["W_enc"], np.float64) / scale[:, None]).astype(np.float32)
  out["W_dec"] = (np.asarray(params["W_dec"], np.float64) * scale[None, :]).astype(np.float32)
  out["b_dec"] = (offset + scale * np.asarray(params["b_dec"], np.float64)).astype(np.float32)
  return out


def saelens_state(params: dict, activation: str) -> dict[str, np.ndarray]:
  """SAELens's state dict for one member's (folded) arrays: W_enc, b_enc, W_dec, b_dec (+ threshold)."""
  state = {k: np.ascontiguousarray(params[k], np.float32) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
  m = state["b_enc"].shape[0]
  if activation == "jumprelu":
    state["threshold"] = np.exp(np.asarray(params["log_threshold"], np.float64)).astype(np.float32)
  elif activation == "batchtopk":
    state["threshold"] = np.full((m,), float(params["threshold"]), np.float32)
  return state


def saelens_cfg(config, d_in: int, d_sae: int, metadata: dict) -> dict:
  """cfg.json of SAELens's SAEConfig (and TopKSAEConfig's k) for a jaxae SAE config."""
  activation = config.sae.activation
  cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
         "normalize_activations": "none", "reshape_activations": "none",
         "architecture": ARCHITECTURES[activation],
         "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
                      "model_name": None, "hook_name": None, **metadata}}
  if activation == "topk":
    cfg["k"] = int(config.sae.k)
    cfg["rescale_acts_by_decoder_norm"] = False
  return cfg


def _member_folder(member: dict) -> str:
  setting = "_".join(f"{k.split('.')[-1]}={v}" for k, v in member["setting"].items())
  return f"{setting}_seed{member['seed']}" if setting else f"seed{member['seed']}"


def _write(path: str, write) -> None:
  """files.replace_with (atomic; neither `path` nor its temporary file written through a link), with the
  permissions open() would give (safetensors writes 0600)."""
  def write_readable(tmp):
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)

  try:
    files.replace_with(path, write_readable)
  except errors.WorkdirError as e:
    raise ExportError(str(e)) from None


def _write_text(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)


def _inside(path: str, root: str) -> bool:
  path, root = os.path.abspath(path), os.path.abspath(root)
  return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def export_saelens(workdir: str, out: str | None = None) -> list[str]:
  """Writes every member of the run in `workdir` in the SAELens format; returns the folders written.

  Holds the workdir's lock (workdir.taken: a run training there is WorkdirBusy, exit 75). Writes only
  below `out` (default `<workdir>/export/saelens`, listed in the workdir's manifest.jsonl), through no
  symlink at any level: `out` itself and every folder and file below it are checked before anything is
  written. Raises ExportError (one line) for a workdir without a complete checkpoint, a run that is not
  an SAE, or a symlink; errors.EnvironmentFailure when `out` is a file or cannot be written.
  """
  from contextlib import nullcontext

  from safetensors.numpy import save_file

  from jaxae import load
  from jaxae import workdir as workdir_lib

  default = out is None
  out = out or os.path.join(workdir, "export", "saelens")
  outside = not _inside(out, workdir)
  if os.path.islink(out):
    raise ExportError(f"{out} is a symlink (to {os.readlink(out)}): jaxae never writes through a symlink; give "
                      f"the folder itself")
  if os.path.lexists(out) and not os.path.isdir(out):
    raise errors.EnvironmentFailure(f"--out={out} is a file, not a directory")
  with workdir_lib.taken(workdir, writes=not outside), workdir_lib.writing(workdir), \
      (files.confined(out, record=False) if outside else nullcontext()):
    groups_dir = os.path.join(workdir, "groups")
    groups = sorted(os.listdir(groups_dir)) if os.path.isdir(groups_dir) else [None]
    runs = []
    for group in groups:  # every destination is known, and checked, before the first file is written
      try:
        run = load.load_run(workdir, group=group)
      except FileNotFoundError as e:
        raise ExportError(str(e)) from None
      params = run.params["params"]
      # Any variant whose parameters are an SAE's (the built-in 'sae', or a user's variant built on it) exports.
      if not {"W_enc", "b_enc", "W_dec", "b_dec"} <= set(params) or "sae" not in run.config:
        raise ExportError(f"{run.workdir} trained variant {run.config.variant!r}, whose parameters are not a sparse "
                          f"autoencoder's (W_enc, b_enc, W_dec, b_dec): only SAE runs export to SAELens")
      if run.model.target is not None and transcoder.saelens_architecture(run.config) is None:
        raise ExportError(f"{run.workdir} is a transcoder with sae.activation={run.config.sae.activation!r}, which "
                          f"SAELens has no class for: its transcoders are {', '.join(sorted({a for a, _ in transcoder.SAELENS_ARCHITECTURES}))}")
      for member in run.members:
        folder = os.path.join(out, group or "", _member_folder(member))
        try:
          files.check_levels(folder, True)
          for name in ("sae_weights.safetensors", "cfg.json"):
            for path in (os.path.join(folder, name), os.path.join(folder, name) + ".tmp"):
              files.check_levels(path, False)
        except errors.WorkdirError as e:
          raise ExportError(str(e)) from None
      runs.append((group, run))
    if default:
      files.make_dirs(os.path.join(workdir, "export"))
    written = []
    for group, run in runs:
      params = run.params["params"]
      activation = run.config.sae.activation
      for i, member in enumerate(run.members):
        arrays = {k: np.asarray(v[i]) for k, v in params.items()}
        target = run.model.target
        if target is None:
          one = fold_normalizer(arrays, run.model.normalizer, run.model.data_shape)
          state = saelens_state(one, activation)
        else:
          one = transcoder.fold_normalizers(arrays, run.model.normalizer, run.model.data_shape, target)
          state = transcoder.saelens_state(one, activation, saelens_state(one, activation))
        d_in, d_sae = state["W_enc"].shape
        metadata = {"jaxae_workdir": os.path.abspath(run.workdir), "jaxae_step": run.step,
                    "jaxae_seed": member["seed"], "jaxae_setting": member["setting"],
                    "jaxae_activation": activation, "jaxae_input_shape": list(run.model.data_shape)}
        if target is not None:
          metadata["jaxae_target_shape"] = list(target.shape)
        cfg = saelens_cfg(run.config, int(d_in), int(d_sae), metadata)
        if target is not None:
          cfg = transcoder.saelens_cfg(run.config, cfg, state["W_dec"].shape[1])
        folder = files.make_dirs(os.path.join(out, group or "", _member_folder(member)))
        _write(os.path.join(folder, "sae_weights.safetensors"), lambda p: save_file(state, p))
        _write(os.path.join(folder, "cfg.json"), lambda p: _write_text(p, json.dumps(cfg, indent=1)))
        written.append(folder)
  return written


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxae.export", description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="a run's workdir (python -m jaxae.main --workdir=...)")
  p.add_argument("--format", default="saelens", choices=FORMATS)
  p.add_argument("--out", default="", help="output folder (default <workdir>/export/<format>)")
  args = p.parse_args(argv)
  from jaxae import main as main_lib

  main_lib.quiet_libraries()

  def body() -> int:
    folders = export_saelens(args.workdir, args.out or None)
    print(f"wrote {len(folders)} SAELens folder(s) (cfg.json + sae_weights.safetensors):")
    for f in folders:
      print(f"  {f}")
    return 0

  # The exit statuses of training (errors.py): 2 bad input, 74 environment, 75 busy, 130 Ctrl-C, 70 a bug.
  return main_lib.guarded(body, "the folders written before are complete", "the folders written before are complete")


if __name__ == "__main__":
  from jaxae.main import exit_now

  exit_now(main())  # skips the interpreter's ~0.6 s teardown once everything is written
