"""Export trained sparse autoencoders to other tools' on-disk formats: `python -m jaxae.export`.

    python -m jaxae.export --workdir=runs/sae --format=saelens [--out=DIR]

writes one folder per member (every seed of every sweep setting, every group of a sweep with static keys)
under DIR (default `<workdir>/export/saelens`), named `<group>/<setting>seed<s>`, each readable by
`sae_lens.SAE.load_from_disk(folder)`.

Splicing into a model: SAELens's `HookedSAETransformer.add_sae(sae)` attaches an SAE at
`sae.cfg.metadata.hook_name` and attaches nothing (a logged warning only) when that is None, so
`--hook_name=blocks.8.hook_resid_pre` (or the run's `sae.hook_name`) should be given; `--model_name`,
`--dataset_path`, `--context_size`, `--[no-]prepend_bos` (or `sae.model_name`, ...; a flag overrides the
config) are written into the same `metadata` block, where SAELens's training runner writes them
(`LanguageModelSAETrainingRunner._set_sae_metadata`, sae_lens 6.54). A hook name ending in `hook_z`
sets reshape_activations='hook_z' (SAELens flattens the heads of such activations itself).

Feature density: the fraction of examples each latent fires on (z != 0 at inference), over the run's
training split or `--density_sample=SOURCE` (`--density_sample=none`: not computed), written beside the
weights as `sparsity.safetensors` (key 'sparsity': log10(density + 1e-10) float32 (d_sae,), what SAELens's
SAETrainer saves as its log feature sparsity) and `feature_density.npy` (the density itself).

The SAELens format, as SAELens 6.18.0 writes and reads it (`SAE.save_model` / `sae_lens_disk_loader`
in sae_lens/saes/sae.py and sae_lens/loading/pretrained_sae_loaders.py, read at commit 91ca16c):
  sae_weights.safetensors  W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in), b_dec (d_in,) float32,
                           and threshold (d_sae,) for the 'jumprelu' architecture
  sparsity.safetensors     sparsity (d_sae,) = log10(feature density + 1e-10) (sae_lens/training/sae_trainer.py)
  cfg.json                 d_in, d_sae, dtype, device, apply_b_dec_to_input, normalize_activations,
                           reshape_activations, architecture ('standard' | 'topk' | 'jumprelu'), k and
                           rescale_acts_by_decoder_norm for 'topk', and metadata (sae_lens_version >= 6
                           marks the current format; jaxae adds its provenance)
jaxae's 'relu' SAEs are 'standard', 'topk' is 'topk', 'jumprelu' is 'jumprelu' (threshold =
exp(log_threshold)), and 'batchtopk' is 'jumprelu' with every threshold at the estimated global one, as
SAELens saves its own BatchTopK SAEs. The architectures of `jaxae.sae_archs` give their own: 'gated' is
SAELens's 'gated' (W_enc, b_gate, r_mag, b_mag, W_dec, b_dec, no b_enc; sae_lens/saes/gated_sae.py) and
'matryoshka_batchtopk' is 'jumprelu' as batchtopk (SAELens's MatryoshkaBatchTopKTrainingSAE saves as
JumpReLU, sae_lens/saes/matryoshka_batchtopk_sae.py). The run's input normalization (data.Normalizer, any per-feature
affine map x' = (x - offset) / scale) is folded into the weights, so the exported SAE takes the raw
activations (normalize_activations='none'), as SAELens's `fold_activation_norm_scaling_factor` does:
W_enc / scale (rows), W_dec * scale (columns), b_dec -> offset + scale * b_dec; codes are unchanged.
Transcoders (data.target_source) export as SAELens's transcoder classes, both normalizations folded
(`jaxae.transcoder`: architectures, d_out, W_skip); 'topk' transcoders have no SAELens class (ExportError).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys

import numpy as np

from jaxae import errors, files, transcoder

SAELENS_FORMAT_VERSION = "6.18.0"  # the SAELens release whose save/load code this format follows
ARCHITECTURES = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}
FORMATS = ("saelens",)
# Where a trained SAE sits in a model: SAELens's metadata keys, settable as sae.<key> or --<key>.
SPLICE_KEYS = ("hook_name", "model_name", "dataset_path", "context_size", "prepend_bos")
# A TransformerLens hook point: dot-separated module names ending in a HookPoint named hook_*
# ('hook_embed', 'blocks.8.hook_resid_pre', 'blocks.3.attn.hook_z', 'ln_final.hook_normalized').
_HOOK_NAME = re.compile(r"(?:[A-Za-z0-9_]+\.)*hook_[A-Za-z0-9_]+")
HOOK_NAME_EXAMPLES = "'blocks.8.hook_resid_pre', 'blocks.3.attn.hook_z', 'blocks.0.mlp.hook_post'"
SPARSITY_EPS = 1e-10  # SAELens's log10(density + eps) (sae_lens/training/sae_trainer.py, _log_feature_sparsity)
NO_HOOK_WARNING = ("warning: no hook name (--hook_name or sae.hook_name): SAELens's HookedSAETransformer.add_sae "
                   "will attach these SAEs to nothing")


def saelens_architecture(activation: str) -> str:
  """SAELens's cfg.json `architecture` for a jaxae `sae.activation` (built-in or jaxae.sae_archs)."""
  from jaxae import sae_archs

  arch = sae_archs.get(activation)
  return arch.saelens_architecture if arch is not None else ARCHITECTURES[activation]


class ExportError(errors.BadInput, ValueError):
  """A workdir that cannot be exported (no checkpoint, not an SAE, an output path through a link): exit 2."""


def fold_normalizer(params: dict, normalizer, data_shape) -> dict:
  """One member's SAE arrays (numpy) with the input normalization x' = (x - offset) / scale folded in.

  The SAE on normalized inputs, pi = (x' - b_dec) W_enc + b_enc and x_hat' = z W_dec + b_dec, equals the
  SAE on raw inputs with W_enc / scale[:, None], W_dec * scale[None, :] and b_dec -> offset + scale * b_dec
  (its reconstruction is then scale * x_hat' + offset); a gated SAE's magnitude path W_enc * exp(r_mag)
  scales with W_enc, its biases b_gate, b_mag stay. normalizer None: the arrays as they are.
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
  """SAELens's state dict for one member's (folded) arrays: W_enc, b_enc, W_dec, b_dec (+ threshold), or the
  registered architecture's (`jaxae.sae_archs`)."""
  from jaxae import sae_archs

  if sae_archs.get(activation) is not None:
    return sae_archs.get(activation).saelens_state(params)
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
         "architecture": saelens_architecture(activation),
         "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
                      "model_name": None, "hook_name": None, **metadata}}
  if activation == "topk":
    cfg["k"] = int(config.sae.k)
    cfg["rescale_acts_by_decoder_norm"] = False
  hook = cfg["metadata"]["hook_name"]
  if hook and hook.split(".")[-1] == "hook_z":  # (B, pos, heads, d_head) activations: SAELens flattens the heads
    cfg["reshape_activations"] = "hook_z"
  return cfg


def check_hook_name(name, where: str = "--hook_name") -> str:
  """`name` if it is a plausible TransformerLens hook point (dot-separated names, the last hook_*), else
  ExportError (one line, naming `where`). Whether the model has that hook is checked only by SAELens."""
  if not isinstance(name, str) or not _HOOK_NAME.fullmatch(name):
    raise ExportError(f"{where}={name!r} is not a TransformerLens hook name (dot-separated, ending in a hook point "
                      f"hook_*), e.g. {HOOK_NAME_EXAMPLES}")
  return name


def splice_metadata(config, overrides: dict | None = None) -> dict:
  """SAELens's metadata of where the SAE goes in a model, from the run's `sae.<key>` and `overrides`.

  overrides: {key in SPLICE_KEYS: value or None}; a value that is not None (a command-line flag) wins
  over the config. Unset: '' for strings and 0 for context_size in the config, written as null.
  Returns {hook_name, model_name, dataset_path, context_size, prepend_bos, model_from_pretrained_kwargs}.
  Raises ExportError for a hook name that was given (a flag, or a non-empty config value) but is not a
  TransformerLens hook (`check_hook_name`: '' or whitespace included), or a negative context size.
  """
  section = config.get("sae") or {}
  values = {k: section.get(k) for k in SPLICE_KEYS}
  where = {k: f"sae.{k}" for k in SPLICE_KEYS}
  for key, value in (overrides or {}).items():
    if key not in SPLICE_KEYS:
      raise ValueError(f"{key!r} is not one of {SPLICE_KEYS}")
    if value is not None:
      values[key], where[key] = value, f"--{key}"
  hook = values["hook_name"]
  if hook or (hook is not None and where["hook_name"].startswith("--")):
    check_hook_name(hook, where["hook_name"])
  size = values["context_size"]
  if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
    raise ExportError(f"{where['context_size']}={size!r} must be a non-negative integer (the model's context, "
                      f"in tokens; 0 = not recorded)")
  text = lambda v: str(v) if v else None
  return {"hook_name": hook or None, "model_name": text(values["model_name"]),
          "dataset_path": text(values["dataset_path"]), "context_size": size or None,
          "prepend_bos": True if values["prepend_bos"] is None else bool(values["prepend_bos"]),
          "model_from_pretrained_kwargs": {}}


def count_firing(run, x, batch_size: int = 1024) -> tuple[np.ndarray, int]:
  """(counts int64 (members, m), N): on how many of the N rows of x (N, *data_shape), as stored (the run's
  normalizer is applied), each latent of each member of `run` fires, i.e. its inference code
  (`Variant.code_fn`) is nonzero, as SAELens's SAETrainer counts `feature_acts.bool()`. One member at a
  time within a batch (lax.map: one (batch_size, m) code in memory); x is read in chunks (`data.row_chunks`)."""
  import jax
  import jax.numpy as jnp

  from jaxae import configs
  from jaxae import data as data_lib

  net = run.model
  code = configs.variant_of(run.config).code_fn(run.config, net)

  @jax.jit
  def batch_counts(params, xb, valid):
    def one(p):
      z = code(p, net.prepare(xb)).reshape(len(xb), -1)
      return jnp.sum((z != 0) & valid[:, None], axis=0, dtype=jnp.int32)
    return jax.lax.map(one, params)

  counts, n = None, 0
  for chunk in data_lib.row_chunks(x):
    chunk = np.asarray(chunk)
    for start in range(0, len(chunk), batch_size):
      xb = chunk[start:start + batch_size]
      rows = len(xb)
      if rows < batch_size:  # padded to one shape (one compilation); the padding rows are masked out
        xb = np.concatenate([xb, np.zeros((batch_size - rows, *xb.shape[1:]), xb.dtype)])
      c = np.asarray(batch_counts(run.params, xb, np.arange(batch_size) < rows), np.int64)
      counts = c if counts is None else counts + c
      n += rows
  return counts, n


def feature_density(counts, n: int) -> np.ndarray:
  """The fraction of examples each latent fires on, counts / n, float32 (..., m)."""
  return (np.asarray(counts, np.float64) / n).astype(np.float32)


def log_sparsity(density) -> np.ndarray:
  """SAELens's `sparsity` tensor: log10(density + 1e-10), float32 (sae_lens/training/sae_trainer.py)."""
  return np.log10(np.asarray(density, np.float64) + SPARSITY_EPS).astype(np.float32)


def _density_sample(source: str | None):
  """The split named by --density_sample: None for the run's training split, 'none' for no density."""
  if source in (None, "", "none"):
    return source or None
  from jaxae import data as data_lib

  split = data_lib.load_source(source)
  data_lib.check_split(split)
  return split


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


def _write_npy(path: str, array) -> None:
  with open(path, "wb") as f:  # a file object: np.save would add '.npy' to the temporary file's name
    np.save(f, array)


def _inside(path: str, root: str) -> bool:
  path, root = os.path.abspath(path), os.path.abspath(root)
  return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def export_saelens(workdir: str, out: str | None = None, splice: dict | None = None,
                   density_sample: str | None = None, density_rows: int = 0) -> list[str]:
  """Writes every member of the run in `workdir` in the SAELens format; returns the folders written.

  splice: {key in SPLICE_KEYS: value or None}, overriding the run's sae.hook_name, ... (`splice_metadata`);
  without a hook name a one-line warning goes to stderr (the export is still written). density_sample:
  a data source (`data.load_source`) for the feature density, None for the run's training split, 'none'
  for no density; density_rows > 0: a fixed random subset (seed 0) of that many of its rows.

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

  from jaxae import data as data_lib

  if isinstance(density_rows, bool) or not isinstance(density_rows, int) or density_rows < 0:
    raise ExportError(f"--density_rows={density_rows!r} must be a non-negative integer (0 = every row)")
  sample = _density_sample(density_sample)
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
      if not {"W_enc", "W_dec", "b_dec"} <= set(params) or "sae" not in run.config:
        raise ExportError(f"{run.workdir} trained variant {run.config.variant!r}, whose parameters are not a sparse "
                          f"autoencoder's (W_enc, b_enc, W_dec, b_dec): only SAE runs export to SAELens")
      if run.model.target is not None and transcoder.saelens_architecture(run.config) is None:
        raise ExportError(f"{run.workdir} is a transcoder with sae.activation={run.config.sae.activation!r}, which "
                          f"SAELens has no class for: its transcoders are {', '.join(sorted({a for a, _ in transcoder.SAELENS_ARCHITECTURES}))}")
      meta = splice_metadata(run.config, splice)
      for member in run.members:
        folder = os.path.join(out, group or "", _member_folder(member))
        try:
          files.check_levels(folder, True)
          for name in ("sae_weights.safetensors", "cfg.json", "sparsity.safetensors", "feature_density.npy"):
            for path in (os.path.join(folder, name), os.path.join(folder, name) + ".tmp"):
              files.check_levels(path, False)
        except errors.WorkdirError as e:
          raise ExportError(str(e)) from None
      density = None
      if sample != "none":
        split = sample or dataclasses.replace(data_lib.load(run.config.data).train, name="the run's training split")
        if tuple(split.x.shape[1:]) != tuple(run.model.data_shape):
          raise ExportError(f"--density_sample={density_sample!r} has examples of shape {tuple(split.x.shape[1:])}, "
                            f"the SAE of {run.workdir} takes {tuple(run.model.data_shape)}")
        if density_rows and density_rows < len(split):
          split = data_lib.random_subset(split, density_rows, 0)
        counts, n = count_firing(run, split.x)
        density = (feature_density(counts, n), {"jaxae_density_source": density_sample or "training split",
                                                "jaxae_density_examples": n})
      runs.append((group, run, meta, density))
    if default:
      files.make_dirs(os.path.join(workdir, "export"))
    written = []
    for group, run, meta, density in runs:
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
                    "jaxae_activation": activation, "jaxae_input_shape": list(run.model.data_shape),
                    **meta, **(density[1] if density else {})}
        if target is not None:
          metadata["jaxae_target_shape"] = list(target.shape)
        cfg = saelens_cfg(run.config, int(d_in), int(d_sae), metadata)
        if target is not None:
          cfg = transcoder.saelens_cfg(run.config, cfg, state["W_dec"].shape[1])
        folder = files.make_dirs(os.path.join(out, group or "", _member_folder(member)))
        _write(os.path.join(folder, "sae_weights.safetensors"), lambda p: save_file(state, p))
        if density is not None:
          d = density[0][i]
          _write(os.path.join(folder, "sparsity.safetensors"), lambda p: save_file({"sparsity": log_sparsity(d)}, p))
          _write(os.path.join(folder, "feature_density.npy"), lambda p: _write_npy(p, d))
        _write(os.path.join(folder, "cfg.json"), lambda p: _write_text(p, json.dumps(cfg, indent=1)))
        written.append(folder)
  if any(meta["hook_name"] is None for _, _, meta, _ in runs):  # after writing: a failed export says one line
    print(NO_HOOK_WARNING, file=sys.stderr)
  return written


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxae.export", description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="a run's workdir (python -m jaxae.main --workdir=...)")
  p.add_argument("--format", default="saelens", choices=FORMATS)
  p.add_argument("--out", default="", help="output folder (default <workdir>/export/<format>)")
  p.add_argument("--hook_name", default=None, help="the TransformerLens hook the SAE reads and replaces, e.g. "
                 "blocks.8.hook_resid_pre (default: the run's sae.hook_name); without one SAELens's add_sae attaches nothing")
  p.add_argument("--model_name", default=None, help="the model, as HookedTransformer.from_pretrained names it "
                 "(default: sae.model_name)")
  p.add_argument("--dataset_path", default=None, help="the dataset the activations came from (default: sae.dataset_path)")
  p.add_argument("--context_size", default=None, type=int, help="tokens per sequence of those activations "
                 "(default: sae.context_size; 0 = not recorded)")
  p.add_argument("--prepend_bos", default=None, action=argparse.BooleanOptionalAction,
                 help="whether the activations were taken with a BOS token prepended (default: sae.prepend_bos, True)")
  p.add_argument("--density_sample", default="", help="data source for the feature density (default: the run's "
                 "training split; 'none': no sparsity.safetensors)")
  p.add_argument("--density_rows", default=0, type=int, help="a random subset of that many rows for the density "
                 "(0 = every row)")
  args = p.parse_args(argv)
  from jaxae import main as main_lib

  main_lib.quiet_libraries()

  def body() -> int:
    splice = {k: getattr(args, k) for k in SPLICE_KEYS}
    folders = export_saelens(args.workdir, args.out or None, splice, args.density_sample or None, args.density_rows)
    extra = "" if args.density_sample == "none" else " + sparsity.safetensors + feature_density.npy"
    print(f"wrote {len(folders)} SAELens folder(s) (cfg.json + sae_weights.safetensors{extra}):")
    for f in folders:
      print(f"  {f}")
    return 0

  # The exit statuses of training (errors.py): 2 bad input, 74 environment, 75 busy, 130 Ctrl-C, 70 a bug.
  return main_lib.guarded(body, "the folders written before are complete", "the folders written before are complete")


if __name__ == "__main__":
  from jaxae.main import exit_now

  exit_now(main())  # skips the interpreter's ~0.6 s teardown once everything is written
