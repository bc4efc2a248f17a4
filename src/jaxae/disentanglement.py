"""Disentanglement metrics: how codes (N, D) of examples line up with their ground-truth factors (N, K).

Pure functions of in-memory arrays (NumPy; scikit-learn for the fitted predictors), used by
`jaxae.evaluate` when the held-out data carry factors (`Split.factors`, e.g. `data.source=dsprites`).
codes: (N, D) float, one row per example (a Gaussian encoder's means, as in disentanglement_lib);
factors: (N, K) integer indices (or other integer values) of the K factors of the same examples. Every
score is dimensionless, 1 for codes whose units are the factors one to one, about 0 for codes that
ignore the factors (FactorVAE score: 1/K, chance):

  mig                  mutual information gap (Chen et al. 2018, "Isolating sources of
                       disentanglement in VAEs", sec. 5): for each factor v_k, the gap between
                       the largest and second-largest mutual information I(z_j; v_k) over units j,
                       divided by the entropy H(v_k), averaged over factors. I is estimated as in
                       disentanglement_lib (Locatello et al. 2019): each unit discretized into 20
                       equal-width bins of its range, then counted (nats); Chen et al. estimate it from
                       q(z|x) instead, so values are not interchangeable with their tables.
  dci_disentanglement, dci_completeness, dci_informativeness
                       Eastwood & Williams 2018, "A framework for the quantitative evaluation of
                       disentangled representations"): an importance matrix R (D, K) from one
                       predictor per factor fitted on training codes (default: a random forest, one of
                       the paper's two regressors, here classifying the factor index; 'gbt': gradient-
                       boosted trees, disentanglement_lib's choice, ~75 s per 32-valued factor on 2,000
                       codes on a 2-core VM, about 100x the forest). Disentanglement
                       sum_i rho_i (1 - H_K(P_i.)) with P_ij = R_ij / sum_k R_ik and rho_i = sum_j R_ij
                       / sum R; completeness sum_j rho'_j (1 - H_D(P'_.j)) with P'_ij = R_ij / sum_i R_ij
                       and rho'_j = sum_i R_ij / sum R (as disentanglement_lib); entropies in base K and
                       D. Informativeness: the predictors' mean test accuracy over factors (a fraction,
                       higher is better; the paper reports a prediction error, 1 - this).
  sap                  separated attribute predictability (Kumar, Sattigeri & Balakrishnan 2018,
                       "Variational inference of disentangled latent concepts from unlabeled
                       observations"): a score matrix S (D, K) of predicting factor k from unit
                       j alone, and the mean over factors of the gap between the two best units.
                       Factors are treated as discrete: S_jk is the balanced accuracy on test codes of a
                       threshold classifier on unit j (a decision tree on that one unit with at most
                       n_k leaves, i.e. n_k - 1 thresholds, for a factor with n_k values), adjusted for
                       chance, (acc - 1/n_k) / (1 - 1/n_k) (sklearn's adjusted=True), so that chance is
                       0 and a perfect unit 1. disentanglement_lib scores unadjusted accuracy of a
                       linear SVM instead, which stays far below 1 for factors with many values.
  factorvae_score      Kim & Mnih 2018, "Disentangling by factorising", sec. 4: codes divided by their
                       standard deviation over the data; a vote fixes one factor k (its value that of a
                       random example), takes L = 64 examples sharing it (disentanglement_lib's batch
                       size; the other factors vary as in the data) and records the unit of least
                       variance over them; the score is the accuracy on `num_eval` fresh votes of the
                       majority-vote classifier unit -> factor fitted on `num_train` votes
                       (disentanglement_lib: 10,000 and 5,000). Examples are drawn from the given
                       table, grouped by factor value (`FactorGroups`), instead of rendered anew from
                       the generative process: training votes from one random half of it, eval votes
                       from the other.

Locatello et al. 2019 ("Challenging common assumptions in the unsupervised learning of disentangled
representations") show these scores vary as much over random seeds as over models: report them over seeds.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

KEYS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factorvae_score")
NUM_BINS = 20  # disentanglement_lib's discretization of codes for the mutual information (MIG)


def _check(codes, factors) -> tuple[np.ndarray, np.ndarray]:
  codes = np.asarray(codes, np.float64)
  codes = codes.reshape(len(codes), -1)
  factors = np.asarray(factors)
  if factors.ndim != 2 or len(factors) != len(codes):
    raise ValueError(f"factors must be (N, K) for codes of {len(codes)} examples, got shape {factors.shape}")
  if factors.dtype.kind not in "iub":
    raise ValueError(f"factors must be integer indices, got dtype {factors.dtype}")
  if not np.isfinite(codes).all():
    raise ValueError("codes have NaN or Inf values")
  return codes, factors


def _dense(values: np.ndarray) -> np.ndarray:
  """Values (N,) of any discrete kind as indices 0..n-1 (n distinct values)."""
  return np.unique(values, return_inverse=True)[1].reshape(-1)


def discretize(codes, num_bins: int = NUM_BINS) -> np.ndarray:
  """Each column of codes (N, D) as bin indices (N, D) int64 in [0, num_bins): equal-width bins over the
  column's range, the maximum in the last bin (disentanglement_lib's `_histogram_discretize`, 0-based).
  A constant column falls into one bin."""
  codes = np.asarray(codes, np.float64).reshape(len(codes), -1)
  out = np.empty(codes.shape, np.int64)
  for j in range(codes.shape[1]):
    edges = np.histogram_bin_edges(codes[:, j], num_bins)
    out[:, j] = np.digitize(codes[:, j], edges[:-1]) - 1
  return out


def entropy(values) -> float:
  """Entropy in nats of the empirical distribution of discrete values (N,): -sum_a p(a) log p(a)."""
  p = np.bincount(_dense(np.asarray(values))) / len(values)
  return float(-np.sum(p * np.log(p)))


def mutual_information(a, b) -> float:
  """Mutual information in nats of the empirical joint distribution of discrete values a, b (N,):
  sum_{a,b} p(a,b) log(p(a,b) / (p(a) p(b))), from counts (sklearn's mutual_info_score)."""
  a, b = _dense(np.asarray(a)), _dense(np.asarray(b))
  nb = b.max() + 1
  joint = np.bincount(a * nb + b, minlength=(a.max() + 1) * nb).reshape(-1, nb) / len(a)
  pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
  nz = joint > 0
  return float(np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])))


def mutual_information_matrix(discrete_codes, factors) -> np.ndarray:
  """(D, K) float64: I(z_j; v_k) in nats of discrete codes (N, D) and factors (N, K)."""
  z, f = np.asarray(discrete_codes), np.asarray(factors)
  return np.asarray([[mutual_information(z[:, j], f[:, k]) for k in range(f.shape[1])] for j in range(z.shape[1])])


def mig(codes, factors, num_bins: int = NUM_BINS) -> float:
  """Mutual information gap (Chen et al. 2018, eq. 6; module docstring) of codes (N, D), D >= 2, and
  factors (N, K): mean over factors of (I_(1) - I_(2)) / H(v_k), I_(1) >= I_(2) the two largest I(z_j; v_k)
  over units, codes discretized into `num_bins` bins. Constant factors (H = 0) are left out of the mean.
  In [0, 1]. Raises ValueError for D < 2, every factor constant, or non-finite codes."""
  codes, factors = _check(codes, factors)
  if codes.shape[1] < 2:
    raise ValueError(f"MIG needs at least 2 code units, got {codes.shape[1]}")
  m = mutual_information_matrix(discretize(codes, num_bins), factors)
  h = np.asarray([entropy(factors[:, k]) for k in range(factors.shape[1])])
  top = np.sort(m, axis=0)[::-1]
  keep = h > 0
  if not keep.any():
    raise ValueError("MIG needs a factor that varies: every factor is constant")
  return float(np.mean((top[0, keep] - top[1, keep]) / h[keep]))


def _normalized_entropy(p: np.ndarray, base: int) -> np.ndarray:
  """Entropy in base `base` of each row of p (rows sum to 1; 0 log 0 = 0)."""
  logs = np.log(np.where(p > 0, p, 1.0))
  return -np.sum(p * logs, axis=-1) / np.log(base)


def dci_scores(importance) -> tuple[float, float]:
  """(disentanglement, completeness) of an importance matrix R (D, K) >= 0 (Eastwood & Williams 2018,
  sec. 3; module docstring). Units (or factors) with no importance get weight 0; an all-zero R scores 0.
  Raises ValueError unless D >= 2 and K >= 2 (the entropies are in base K and D)."""
  r = np.abs(np.asarray(importance, np.float64))
  d, k = r.shape
  if d < 2 or k < 2:
    raise ValueError(f"DCI needs at least 2 code units and 2 factors, got an importance matrix of shape {r.shape}")
  total = r.sum()
  if total == 0:
    return 0.0, 0.0
  per_code, per_factor = r.sum(1), r.sum(0)
  p_code = r / np.where(per_code > 0, per_code, 1.0)[:, None]  # P_ij: unit i's importance over factors
  p_factor = (r / np.where(per_factor > 0, per_factor, 1.0)).T  # P'_ji: factor j's importance over units
  disentanglement = np.sum(per_code / total * (1.0 - _normalized_entropy(p_code, k)))
  completeness = np.sum(per_factor / total * (1.0 - _normalized_entropy(p_factor, d)))
  return float(disentanglement), float(completeness)


def _predictor(kind: str, seed: int):
  if kind == "forest":
    from sklearn.ensemble import RandomForestClassifier
    # Every split considers every unit: with sqrt(D) random candidates a perfect unit's importance leaks
    # to noise units at the nodes where it is not offered (0.47 for 1 of 10 units, measured).
    return RandomForestClassifier(n_estimators=10, max_features=None, random_state=seed, n_jobs=1)
  if kind == "gbt":
    from sklearn.ensemble import GradientBoostingClassifier
    return GradientBoostingClassifier(random_state=seed)  # disentanglement_lib's predictor
  raise ValueError(f"predictor={kind!r} must be 'forest' or 'gbt'")


def dci(codes_train, factors_train, codes_test, factors_test, predictor: str = "forest", seed: int = 0) -> dict:
  """DCI (Eastwood & Williams 2018) of codes: one classifier per factor fitted on (codes_train (N, D),
  factors_train (N, K)), its impurity-based feature importances as column k of R, scored on the test
  codes and factors (M, D), (M, K). predictor: 'forest' (10 trees, every unit considered at every split)
  or 'gbt' (scikit-learn's GradientBoostingClassifier defaults, disentanglement_lib's choice).

  Returns {'disentanglement', 'completeness', 'informativeness' (mean test accuracy over factors),
  'importance' (D, K), 'accuracy' (K,)}. A factor constant in training gets importance 0 and the accuracy
  of predicting that value. Raises ValueError as `dci_scores` and `_check`.
  """
  z_tr, f_tr = _check(codes_train, factors_train)
  z_te, f_te = _check(codes_test, factors_test)
  d, k = z_tr.shape[1], f_tr.shape[1]
  importance, accuracy = np.zeros((d, k)), np.zeros(k)
  for j in range(k):
    if len(np.unique(f_tr[:, j])) < 2:
      accuracy[j] = np.mean(f_te[:, j] == f_tr[0, j])
      continue
    model = _predictor(predictor, seed).fit(z_tr, f_tr[:, j])
    importance[:, j] = np.abs(model.feature_importances_)
    accuracy[j] = np.mean(model.predict(z_te) == f_te[:, j])
  disentanglement, completeness = dci_scores(importance)
  return {"disentanglement": disentanglement, "completeness": completeness,
          "informativeness": float(np.mean(accuracy)), "importance": importance, "accuracy": accuracy}


def sap_from_scores(scores) -> float:
  """SAP (Kumar et al. 2018) of a score matrix S (D, K), D >= 2: the mean over factors (columns) of the
  largest minus the second-largest score. Raises ValueError for D < 2."""
  s = np.asarray(scores, np.float64)
  if s.ndim != 2 or s.shape[0] < 2:
    raise ValueError(f"SAP needs at least 2 code units, got a score matrix of shape {s.shape}")
  top = np.sort(s, axis=0)[::-1]
  return float(np.mean(top[0] - top[1]))


def sap_score_matrix(codes_train, factors_train, codes_test, factors_test, seed: int = 0) -> np.ndarray:
  """(D, K) S_jk: chance-adjusted balanced test accuracy of a threshold classifier on unit j for factor
  k (a scikit-learn decision tree on that unit, at most n_k leaves for the n_k values of k in training);
  0 for a factor constant in training. See the module docstring."""
  from sklearn.metrics import balanced_accuracy_score
  from sklearn.tree import DecisionTreeClassifier

  z_tr, f_tr = _check(codes_train, factors_train)
  z_te, f_te = _check(codes_test, factors_test)
  scores = np.zeros((z_tr.shape[1], f_tr.shape[1]))
  for k in range(f_tr.shape[1]):
    classes = len(np.unique(f_tr[:, k]))
    if classes < 2:
      continue
    for j in range(z_tr.shape[1]):
      tree = DecisionTreeClassifier(max_leaf_nodes=classes, random_state=seed).fit(z_tr[:, j:j + 1], f_tr[:, k])
      with warnings.catch_warnings():  # predicted classes absent from the test factors: fine here
        warnings.simplefilter("ignore")
        scores[j, k] = balanced_accuracy_score(f_te[:, k], tree.predict(z_te[:, j:j + 1]), adjusted=True)
  return scores


def sap(codes_train, factors_train, codes_test, factors_test, seed: int = 0) -> float:
  """SAP (Kumar et al. 2018) of codes: `sap_from_scores(sap_score_matrix(...))`. Raises ValueError for D < 2."""
  return sap_from_scores(sap_score_matrix(codes_train, factors_train, codes_test, factors_test, seed))


@dataclasses.dataclass(frozen=True)
class FactorGroups:
  """The rows of a factor table (N, K) grouped by each factor's value: to draw examples that share the
  value of one factor while the others vary as they do in the table (Kim & Mnih 2018's fixed-factor batches).

  order[k]: (N,) rows sorted by factor k (stable); values[k]: its distinct values (ascending); starts[k]:
  (len(values[k]) + 1,) where each value's rows begin in order[k].
  """
  order: tuple
  values: tuple
  starts: tuple

  @classmethod
  def of(cls, factors) -> FactorGroups:
    factors = np.asarray(factors)
    order, values, starts = [], [], []
    for k in range(factors.shape[1]):
      idx = np.argsort(factors[:, k], kind="stable")
      v, counts = np.unique(factors[idx, k], return_counts=True)
      order.append(idx)
      values.append(v)
      starts.append(np.concatenate([[0], np.cumsum(counts)]))
    return cls(tuple(order), tuple(values), tuple(starts))

  def sample(self, k: int, values, size: int, rng: np.random.Generator) -> np.ndarray:
    """(B, size) int64 rows, row b drawn uniformly with replacement from the rows whose factor k equals
    values[b] (B,). Raises ValueError for a value that no row has."""
    values = np.asarray(values)
    pos = np.searchsorted(self.values[k], values)
    found = pos < len(self.values[k])
    found[found] = self.values[k][pos[found]] == values[found]
    if not found.all():
      raise ValueError(f"no example has factor {k} = {values[~found][0].item()!r}")
    lo, hi = self.starts[k][pos], self.starts[k][pos + 1]
    pick = lo[:, None] + np.floor(rng.random((len(values), size)) * (hi - lo)[:, None]).astype(np.int64)
    return self.order[k][pick]


def _votes(z: np.ndarray, factors: np.ndarray, groups: FactorGroups, n: int, batch_size: int,
           rng: np.random.Generator, chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """n votes (unit of least variance (n,), fixed factor (n,)) of normalized codes z (N, D)."""
  units, fixed = [], []
  for start in range(0, n, chunk):
    m = min(chunk, n - start)
    k = rng.integers(factors.shape[1], size=m)
    value = factors[rng.integers(len(factors), size=m), k]  # the fixed value: that of a random example
    rows = np.empty((m, batch_size), np.int64)
    for j in np.unique(k):
      rows[k == j] = groups.sample(j, value[k == j], batch_size, rng)
    units.append(np.argmin(np.var(z[rows], axis=1, ddof=1), axis=1))
    fixed.append(k)
  return np.concatenate(units), np.concatenate(fixed)


def factorvae_score(codes, factors, batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                    seed: int = 0) -> float:
  """FactorVAE score (Kim & Mnih 2018, sec. 4; module docstring) of codes (N, D) and factors (N, K):
  the eval accuracy of the majority-vote classifier, chance 1/K. Training votes draw from one random half
  of the table and eval votes from the other, as fresh samples of the generative process would be
  independent. Units with zero variance over the data are left out (they cannot be normalized; Kim & Mnih
  prune collapsed units); no unit left scores 0. Votes come from np.random.default_rng(seed). Raises
  ValueError for non-finite codes, batch_size < 2 or fewer than 4 examples."""
  codes, factors = _check(codes, factors)
  if batch_size < 2 or len(codes) < 4:
    raise ValueError(f"the FactorVAE score needs batch_size >= 2 (got {batch_size}) and 4 or more examples "
                     f"(got {len(codes)})")
  scale = np.std(codes, axis=0, ddof=1)
  active = scale > 0
  if not active.any():
    return 0.0
  z = codes[:, active] / scale[active]
  rng = np.random.default_rng(seed)
  # Training and eval votes from disjoint halves of the table: each group of a finite table has its own
  # least-variance units, which votes drawn from the same rows would share (random codes then scored 0.24
  # for a chance of 0.2 on 2,000 rows).
  halves = np.split(rng.permutation(len(z)), [len(z) // 2])
  train, held = ((z[h], factors[h], FactorGroups.of(factors[h])) for h in halves)
  unit, fixed = _votes(*train, num_train, batch_size, rng)
  counts = np.zeros((z.shape[1], factors.shape[1]))
  np.add.at(counts, (unit, fixed), 1)
  classifier = np.argmax(counts, axis=1)  # each unit's majority factor (ties: the first)
  unit, fixed = _votes(*held, num_eval, batch_size, rng)
  return float(np.mean(classifier[unit] == fixed))


def metrics(codes_train, factors_train, codes_test, factors_test, seed: int = 0, predictor: str = "forest") -> dict:
  """{key: float} for KEYS: MIG and the FactorVAE score of the test codes, DCI and SAP fitted on the
  training codes and scored on the test codes. codes (N, D) / (M, D), factors (N, K) / (M, K)."""
  d = dci(codes_train, factors_train, codes_test, factors_test, predictor, seed)
  return {"mig": mig(codes_test, factors_test), "dci_disentanglement": d["disentanglement"],
          "dci_completeness": d["completeness"], "dci_informativeness": d["informativeness"],
          "sap": sap(codes_train, factors_train, codes_test, factors_test, seed),
          "factorvae_score": factorvae_score(codes_test, factors_test, seed=seed)}
