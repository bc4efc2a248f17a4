"""Transcoders: sparse codes of one activation that reconstruct another (`data.target_source`).

A transcoder reads x (D_in) at one point of a network and reconstructs the paired target t (D_out) at
another, typically an MLP's input and output, through a sparse code (Dunefsky et al. 2024, "Transcoders
find interpretable LLM feature circuits"):

    pi    = x @ W_enc + b_enc                   no b_dec on the input: b_dec lives in the output space
    z     = act(pi)                             any `sae.activation` ('relu' + L1, 'topk', 'batchtopk', 'jumprelu')
    t_hat = z @ W_dec + b_dec [+ x @ W_skip]    W_dec (m, D_out), b_dec (D_out,)

trained on ||t - t_hat||^2 in place of the SAE's ||x - x_hat||^2, plus the activation's own penalty. A skip
transcoder (`sae.skip_connection=True`) adds the linear path x @ W_skip, W_skip (D_in, D_out) zero at
init (Paulo et al. 2025, "Transcoders beat sparse autoencoders for interpretability"). The network is
`jaxae.sae.SparseAutoencoder` with `target_shape`; the objective is variant 'sae' (its FVU, explained
variance and cosine similarity are against t).

Data: `data.target_source` is any data source (`npy:mlp_out.npy`, shards, csv, ...) with one row per row
of data.source, in the same order (a different count is a one-line DataError); `data.eval_target_source`
pairs `data.eval_source`. `Split.target` keeps the pairs through the holdout, `max_train`/`max_eval`
subsets, every epoch's shuffle and streaming: the programs gather the rows idx of {'x', 'target'}
together (`data.inputs`). `data.normalize` scales the targets with their own statistics
(`data.fit_target`), stored with the run as `data.Target` and folded back at export.

Export (SAELens >= 6.18 `Transcoder` classes, sae_lens/saes/transcoder.py; 'jumprelu_skip_transcoder'
since a later 6.x, present in 6.54): cfg.json adds d_out with apply_b_dec_to_input=False; W_skip is saved
as SAELens stores it, transposed (D_out, D_in), and SAELens's forward() adds x @ W_skip.T (its decode()
does not). 'topk' transcoders have no SAELens class and are refused (ExportError).
"""

from __future__ import annotations

import math

import numpy as np

# (sae.activation, skip connection) -> SAELens architecture. BatchTopK exports as JumpReLU with every
# threshold at the estimated global one, as jaxae's BatchTopK SAEs do (jaxae.export).
SAELENS_ARCHITECTURES = {
    ("relu", False): "transcoder", ("relu", True): "skip_transcoder",
    ("jumprelu", False): "jumprelu_transcoder", ("jumprelu", True): "jumprelu_skip_transcoder",
    ("batchtopk", False): "jumprelu_transcoder", ("batchtopk", True): "jumprelu_skip_transcoder",
}


def saelens_architecture(config) -> str | None:
  """The SAELens architecture of a transcoder config, or None when SAELens has none ('topk')."""
  return SAELENS_ARCHITECTURES.get((config.sae.activation, bool(config.sae.skip_connection)))


def _affine(normalizer, shape) -> tuple[np.ndarray, np.ndarray]:
  """(offset, scale) float64 (prod(shape),) of a data.Normalizer for rows of `shape` (identity for None)."""
  d = math.prod(shape)
  if normalizer is None or normalizer.kind == "none":
    return np.zeros(d), np.ones(d)
  offset = np.broadcast_to(np.asarray(normalizer.offset, np.float64), tuple(shape)).reshape(d)
  scale = np.broadcast_to(np.asarray(normalizer.scale, np.float64), tuple(shape)).reshape(d)
  return offset, scale


def fold_normalizers(params: dict, normalizer, data_shape, target) -> dict:
  """One member's transcoder arrays (numpy float32) on raw inputs x and raw targets t.

  The network sees x' = (x - o_x) / s_x and predicts t' = (t - o_t) / s_t (`target.normalizer`); with
  x' W_enc = x (W_enc / s_x[:, None]) - (o_x / s_x) W_enc and t_hat = s_t t'_hat + o_t:

    W_enc  -> W_enc / s_x[:, None]               b_enc -> b_enc - (o_x / s_x) @ W_enc
    W_dec  -> W_dec * s_t[None, :]               W_skip -> W_skip * s_t[None, :] / s_x[:, None]
    b_dec  -> o_t + s_t * (b_dec - (o_x / s_x) @ W_skip)

  so codes are unchanged and t_hat comes out in the target's raw units. Thresholds (JumpReLU) act on the
  unchanged pre-activations. normalizer / target.normalizer None: that side as it is.
  """
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  d_out_shape = tuple(target.shape)
  o_x, s_x = _affine(normalizer, data_shape)
  o_t, s_t = _affine(target.normalizer, d_out_shape)
  shift = o_x / s_x  # x' = x / s_x - shift
  out = {k: np.asarray(v, np.float32) for k, v in params.items()}
  out["W_enc"] = (p["W_enc"] / s_x[:, None]).astype(np.float32)
  out["b_enc"] = (p["b_enc"] - shift @ p["W_enc"]).astype(np.float32)
  out["W_dec"] = (p["W_dec"] * s_t[None, :]).astype(np.float32)
  b_dec = p["b_dec"]
  if "W_skip" in p:
    out["W_skip"] = (p["W_skip"] * s_t[None, :] / s_x[:, None]).astype(np.float32)
    b_dec = b_dec - shift @ p["W_skip"]
  out["b_dec"] = (o_t + s_t * b_dec).astype(np.float32)
  return out


def saelens_state(folded: dict, activation: str, state: dict) -> dict[str, np.ndarray]:
  """SAELens's transcoder state dict: the SAE's (`state`, from export.saelens_state: W_enc, b_enc, W_dec,
  b_dec and the JumpReLU threshold) plus W_skip transposed to SAELens's (D_out, D_in)."""
  state = dict(state)
  if "W_skip" in folded:
    state["W_skip"] = np.ascontiguousarray(np.asarray(folded["W_skip"], np.float32).T)
  return state


def saelens_cfg(config, cfg: dict, d_out: int) -> dict:
  """cfg.json of SAELens's TranscoderConfig from the SAE's (`cfg`, export.saelens_cfg): its architecture,
  d_out, and apply_b_dec_to_input=False (SAELens refuses True for transcoders); no TopK fields."""
  cfg = {k: v for k, v in cfg.items() if k not in ("k", "rescale_acts_by_decoder_norm")}
  cfg.update(architecture=saelens_architecture(config), d_out=int(d_out), apply_b_dec_to_input=False)
  return cfg
