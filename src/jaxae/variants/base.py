"""The variant protocol: what jaxae needs to know to train, sweep, checkpoint and report an objective.

A variant is a `Variant` record of plain functions, registered by name (`register`, `get`). Nothing
outside jaxae/variants/ compares `config.variant` with a name: the run, the reports and the analysis
ask the variant. A variant in the user's own Python file, imported by their config file, trains
through `python -m jaxae.main` with seeds, sweeps, checkpoints and resume (README, "Writing your own
variant").

The objective, `make_loss(config, net) -> loss_fn`, with

    loss_fn(params, hparams, batch, key, train) -> (loss, metrics)

is one member's (one seed, one sweep setting) differentiable loss on one batch:
  params   the flax variables of the network (`net.init`)
  hparams  {name: float32 scalar}: the sweepable scalars of `Variant.hparams` (and the optimizer's
           `learning_rate`, `weight_decay`, `decay_fraction`), traced arrays, so a grid of them is one compiled program
  batch    {'x': float32 (B, *data_shape), 'y': int32 (B,) labels (zeros when the data have none),
           'step': int32 scalar, the member's optimizer steps so far (schedules: C(t), warm-ups),
           'num_train': Python int, the training-set size N (estimators of q(z) over the data set)};
           variants with running state (`init_aux`) also find it read-only under 'aux'; with
           data.target_source (variants with `targets`), 'target' float32 (B, *target_shape) holds what
           each input is reconstructed into, its row of the target source, scaled by its own normalizer
  key      a typed PRNG key, a pure function of (seed, step): corruption, sampling, dropout
  train    Python bool; False at evaluation (clean inputs, no dropout)
and returns a float32 scalar loss and {metric name: float32 scalar}. Every objective reports `loss` and
`recon_mse` (per-element MSE of the reconstruction mean). Metrics whose name starts with '_' are not
averaged or reported: '_aux' is the variant's updated running state (see `init_aux`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from jaxae import losses

LossFn = Callable[..., tuple[Any, dict]]


def _nothing(*args) -> None:
  return None


def _no_heads(config) -> dict:
  return {}


@dataclasses.dataclass(frozen=True)
class Adversary:
  """A second network trained against the model in the same step: FactorVAE's or an AAE's discriminator.

  heads      names of the variant's heads (`Variant.heads`) whose parameters are the adversary's; they
             live in the member's params (so they are vmapped, checkpointed and resumed with it) and are
             updated by `optimizer`, the rest by the run's optimizer (`optimizer.*`, swept learning rate)
  optimizer  config -> optax.GradientTransformation of the adversary's parameters (its own state)

  The variant's one loss is the sum of both objectives, each blind to the other's parameters (a
  simultaneous update, as pythae's coupled-optimizer trainer): the model's terms read the adversary's
  outputs through its parameters under `jax.lax.stop_gradient`, and the adversary's term reads
  codes under `stop_gradient`. `train_step` takes one gradient of that sum; `optim.make_optimizer`
  routes each part to its optimizer (optax.multi_transform), and refuses (ValueError) an adversary
  whose heads own no parameter of the network, which would leave it to the run's optimizer.
  The built-in discriminator and its keys: jaxae/variants/_adversarial.py (factor_vae, aae).
  """
  heads: tuple[str, ...]
  optimizer: Callable[[Any], Any]

  def is_adversary(self, path: tuple[str, ...]) -> bool:
    """Whether the parameter at `path` (keys from the variables' root) belongs to the adversary."""
    names = {f"heads_{h}" for h in self.heads}
    return any(p in names for p in path[:2])


@dataclasses.dataclass(frozen=True)
class Variant:
  """One autoencoder objective and everything the framework asks of it.

  name         the value of `config.variant`
  make_loss    (config, net: models.Net) -> loss_fn, see the module docstring
  hparams      {hparam name: dotted config key}: the sweepable scalars the loss reads as
               hparams[name]; sweeping these keys costs no recompilation
  options      {dotted config key: default}: the config keys this variant adds to base_config()
               (its hparams' keys included); a key may be declared by several variants with one default
  encoder      'code' (the encoder outputs the latent) or 'gaussian' ((mean, log_variance))
  heads        config -> {name: flax module} on the latent (e.g. a classifier), built with the network
  needs_labels whether training needs labels (a run on unlabelled data is refused with one line)
  validate     config -> None; raises validation.ConfigError (one line) for values this variant cannot use
  check_data   (config, data: data.Data) -> None; raises data.DataError for data it cannot use
  make_code    (config, net) -> (params, x) -> z: the deterministic code at inference (default: the
               encoder output, its mean for a Gaussian encoder)
  headline     the held-out metric that progress lines, figures and reports lead with
  description  one line for listings
  network      optional (config, data_shape) -> models.Net replacing the built-in network
  targets      whether the variant can reconstruct a target other than its input (data.target_source,
               e.g. a transcoder: an MLP's output from its input); its `network` is then called as
               network(config, data_shape, target_shape) and its loss finds batch['target']. Configs
               with a target source and a variant without `targets` are refused (configs.validate)
  transform_grads optional config -> (params, grads) -> grads, applied before the optimizer
  constrain    optional config -> params -> params, applied after every update (e.g. unit-norm rows)
  init_aux     optional (config, net, data_shape) -> pytree: running state carried in the TrainState
               (per member), passed to the loss as batch['aux'] and replaced by metrics['_aux']
  finalize     optional metric means -> metric means: turns averaged sufficient statistics into
               metrics (e.g. FVU = mean squared error / mean variance), one member, after averaging
  latent_model optional (config, net) -> LatentModel: the generative model p(x, z) = p(x | z) p(z) a
               Gaussian encoder approximates the posterior of. Variants that set it get the
               importance-sampled log-likelihood, prior samples and the prior-quantile manifold from
               `jaxae.evaluate`; the others are evaluated as autoencoders (codes, reconstructions).
  data_init    optional (config, net, x) -> (params -> params) or None: a data-dependent initialization.
               Called once on the host when the program is built, with the training inputs x as stored
               (N, *data_shape), numpy or a memory-mapped LazyArray (read a sample of rows; `net.prepare`
               scales them as the network sees them); the returned function is applied to every member's
               freshly initialized params, before `constrain` (e.g. b_dec = the geometric median of a
               sample, Bricken et al. 2023). Programs built without training inputs skip it.
  update_params optional config -> ((params, aux) -> params) or None: sets parameters that are estimated
               rather than trained from the updated running state, after every update and `constrain`
               (e.g. BatchTopK's inference threshold, so that inference needs only the params); the loss
               must give those parameters a zero gradient
  code_prior   optional config -> ((key, shape) -> z): the prior p(z) a deterministic encoder's codes are
               matched to (WAE, AAE); evaluation decodes its samples (instead of a GMM fitted to the codes)
  adversary    optional `Adversary`: some of the variant's heads are a second network (a discriminator)
               with its own optimizer, updated in the same compiled step from the same loss (see Adversary)
  """

  name: str
  make_loss: Callable[[Any, Any], LossFn]
  hparams: Mapping[str, str] = dataclasses.field(default_factory=dict)
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  encoder: str = "code"
  heads: Callable[[Any], dict] = _no_heads
  needs_labels: bool = False
  validate: Callable[[Any], None] = _nothing
  check_data: Callable[[Any, Any], None] = _nothing
  make_code: Callable[[Any, Any], Callable] | None = None
  headline: str = "recon_mse"
  description: str = ""
  network: Callable[..., Any] | None = None
  targets: bool = False
  transform_grads: Callable[[Any], Callable] | None = None
  constrain: Callable[[Any], Callable] | None = None
  init_aux: Callable[[Any, Any, tuple], Any] | None = None
  finalize: Callable[[dict], dict] | None = None
  latent_model: Callable[[Any, Any], LatentModel] | None = None
  data_init: Callable[[Any, Any, Any], Callable | None] | None = None
  update_params: Callable[[Any], Callable | None] | None = None
  code_prior: Callable[[Any], Callable] | None = None
  adversary: Adversary | None = None

  def __post_init__(self):
    if self.encoder not in ("code", "gaussian"):
      raise ValueError(f"variant {self.name!r}: encoder={self.encoder!r} must be 'code' or 'gaussian'")
    if self.latent_model is not None and self.encoder != "gaussian":
      raise ValueError(f"variant {self.name!r}: a latent_model needs encoder='gaussian' (its q(z|x) is the proposal)")
    if self.targets and self.network is None:
      raise ValueError(f"variant {self.name!r}: targets=True needs a `network` that takes the target's shape")
    if self.adversary is not None and not self.adversary.heads:
      raise ValueError(f"variant {self.name!r}: an adversary names at least one of its heads")
    missing = [k for k in self.hparams.values() if k not in self.options]
    if missing:
      raise ValueError(f"variant {self.name!r}: hparams keys {missing} need a default in `options`")

  def code_fn(self, config, net) -> Callable:
    """(params, x) -> z, the code used at inference (posterior mean for a Gaussian encoder)."""
    if self.make_code is not None:
      return self.make_code(config, net)
    if self.encoder == "gaussian":
      return lambda params, x: net.encode(params, x)[0]
    return lambda params, x: net.encode(params, x)


@dataclasses.dataclass(frozen=True)
class LatentModel:
  """The generative model p(x, z) = p(x | z) p(z) of a variational autoencoder, for evaluation.

  Every function is jit-, vmap-safe and works on float32 arrays:
  log_prior       z (..., d) -> (...): log p(z) in nats
  sample_prior    (key, shape (..., d)) -> z ~ p(z)
  prior_quantile  u (...) in (0, 1) -> z (...): the quantile function of each unit of a factorized prior
                  (the 2-D manifold of Kingma & Welling 2014, fig. 4, and the traversal ranges)
  log_likelihood  (logits (B, *data_shape), x (B, *data_shape), hparams) -> (B,): log p(x | z) in nats
                  per example, from the decoder output for z; `hparams` are the member's (Variant.hparams)
  kl_per_unit     optional (mean (B, d), log_variance (B, d)) -> (B, d): KL(q(z_j|x) || p(z_j)) in closed
                  form, to rank latent units (traversals); None: units are ranked by Var_x(E_q[z_j|x])
  bind            optional params -> LatentModel: the model with one member's parameters closed over, for a
                  prior or posterior with learned parts (VampPrior's pseudo-inputs, a flow). Evaluation
                  calls `model.bound(params)` before using any function; None: nothing to bind.
  posterior       optional (x (B, *data_shape), keys (B,) typed PRNG keys, num) -> (z (B, num, d),
                  log_q (B, num)): samples of q(z|x) and their log-density in nats, the proposal of the
                  importance-sampled likelihood when q is not the encoder's diagonal Gaussian (a normalizing
                  flow); usually set by `bind`. None: the encoder's Gaussian N(mean, exp(log_variance)).
  """
  log_prior: Callable
  sample_prior: Callable
  prior_quantile: Callable
  log_likelihood: Callable
  kl_per_unit: Callable | None = None
  bind: Callable | None = None
  posterior: Callable | None = None

  def bound(self, params) -> LatentModel:
    """This model with one member's `params` in its functions (itself when there is nothing to bind)."""
    return self if self.bind is None else self.bind(params)


LIKELIHOOD_HEAD = "likelihood"  # the head holding a likelihood's learned parameters (params['params']['heads_likelihood'])


class LogSigmaHead(nn.Module):
  """The learned log standard deviation of `loss.reconstruction='gaussian_learned'`, as a head.

  Ignores its input (the latent) and returns its one parameter `log_sigma_offset`, a float32 scalar
  initialized at 0: sigma = loss.gaussian_sigma * exp(log_sigma_offset), so the member's
  `gaussian_sigma` (sweepable) is the initial standard deviation (see `learned_log_sigma`).
  """

  @nn.compact
  def __call__(self, z, train: bool = False):
    return self.param("log_sigma_offset", nn.initializers.zeros, (), jnp.float32)


def learned_log_sigma(net, params, hparams):
  """log sigma (float32 scalar) of the 'gaussian_learned' decoder: log(hparams['gaussian_sigma']) plus the
  head's learned offset (`LogSigmaHead`). params: one member's variables, built with `likelihood_heads`."""
  offset = net.head(params, LIKELIHOOD_HEAD, jnp.zeros((1, 1), jnp.float32))
  return jnp.log(hparams["gaussian_sigma"]) + offset


def standard_normal_model(config, net) -> LatentModel:
  """p(z) = N(0, I) and the decoder likelihood of `loss.reconstruction`: the VAE of Kingma & Welling 2014.

  log p(x | z) in nats per example, a proper density (normalizing constants included), from the decoder
  logits l for z:
  'bce'                   Bernoulli, sum over elements of x log sigmoid(l) + (1 - x) log sigmoid(-l)
                          (a probability mass for binary x)
  'continuous_bernoulli'  the continuous Bernoulli of Loaiza-Ganem & Cunningham 2019 (eq. 7), lambda =
                          sigmoid(l): the Bernoulli term plus log C(lambda), a density on [0, 1]^D
                          (`losses.continuous_bernoulli_log_prob`)
  'mse'                   Gaussian N(x | net.mean(l), sigma^2 I), sigma the member's hparams['gaussian_sigma']
                          (`loss.gaussian_sigma`, fixed)
  'gaussian_learned'      Gaussian N(x | net.mean(l), sigma^2 I) with one learned sigma per member (a scalar:
                          the sigma-VAE of Rybkin et al. 2021, "Simple and effective VAE training with
                          calibrated decoders"), held by the `LogSigmaHead` of
                          `likelihood_heads`: sigma = gaussian_sigma * exp(offset). Its log_likelihood needs
                          the parameters: call `model.bound(params)` first (the unbound one raises ValueError).
  """
  def log_prior(z):
    return -0.5 * jnp.sum(jnp.square(z) + jnp.log(2 * jnp.pi), axis=-1)

  def sample_prior(key, shape):
    return jax.random.normal(key, shape, jnp.float32)

  kind = config.loss.reconstruction
  bind = None
  if kind == "bce":
    def log_likelihood(logits, x, hparams):
      per = jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))
      return -jnp.sum(per.reshape(per.shape[0], -1), axis=-1)
  elif kind == "continuous_bernoulli":
    def log_likelihood(logits, x, hparams):
      return losses.continuous_bernoulli_log_prob(logits, x)
  elif kind == "gaussian_learned":
    def log_likelihood(logits, x, hparams):
      raise ValueError("loss.reconstruction='gaussian_learned' learns its sigma: use model.bound(params).log_likelihood")

    def bind(params):
      def bound_log_likelihood(logits, x, hparams):
        return losses.gaussian_log_prob(net.mean(logits), x, learned_log_sigma(net, params, hparams))
      return dataclasses.replace(model, log_likelihood=bound_log_likelihood, bind=None)
  else:
    def log_likelihood(logits, x, hparams):
      sigma = hparams["gaussian_sigma"]
      sq = jnp.sum(jnp.square(x - net.mean(logits)).reshape(x.shape[0], -1), axis=-1)
      d = x[0].size
      return -0.5 * sq / sigma**2 - 0.5 * d * jnp.log(2 * jnp.pi * sigma**2)

  model = LatentModel(log_prior, sample_prior, ndtri, log_likelihood, losses.kl_per_unit, bind=bind)
  return model


def decoder_log_likelihood(config, net) -> Callable:
  """(params, logits (B, *data_shape), x (B, *data_shape), hparams) -> (B,) float32 log p(x | z), nats per example.

  The decoder likelihood of `loss.reconstruction` ('bce', 'continuous_bernoulli', 'mse', 'gaussian_learned'),
  the same one `standard_normal_model` evaluates, for the objectives (ELBO, IWAE bound, ...) of every
  Gaussian-encoder variant; `params` reach likelihoods with learned parts (`likelihood_heads`).
  """
  model = standard_normal_model(config, net)
  return lambda params, logits, x, hp: model.bound(params).log_likelihood(logits, x, hp)


REPARAMETERIZATION_SALT = 7  # a Gaussian encoder's sample key: fold_in(step key, 7), in every variant that uses it


def gaussian_autoencode(net, log_likelihood: Callable, params, hp, x, key, train) -> dict:
  """One pass of a Gaussian-encoder model, the part every VAE-family objective shares.

  x: float32 (B, *data_shape); `log_likelihood` from `decoder_log_likelihood`. Returns float32 arrays:
  mean, log_var (B, d) of q(z|x); z (B, d), one reparameterized sample (Kingma & Welling 2014, eq. 10;
  key fold_in(key, REPARAMETERIZATION_SALT)); logits, the decoder's output for z; and scalars nll (the
  batch mean of -log p(x|z), nats per example), kl (KL(q(z|x) || N(0, I)), closed form, Kingma & Welling
  2014 appendix B, nats per example), active_units (Burda et al. 2016, sec. 5.2: Var_x(E_q[z_j | x]) >
  0.01, here over the batch) and recon_mse (the decoder mean's squared error).
  """
  mean, log_var = net.encode(params, x, key, train)
  z = losses.reparameterize(jax.random.fold_in(key, REPARAMETERIZATION_SALT), mean, log_var)
  logits = net.decode(params, z, key, train)
  return {"mean": mean, "log_var": log_var, "z": z, "logits": logits,
          "nll": -jnp.mean(log_likelihood(params, logits, x, hp)), "kl": losses.gaussian_kl(mean, log_var),
          "active_units": jnp.sum(jnp.var(mean, axis=0) > 0.01).astype(jnp.float32),
          "recon_mse": losses.mse(net.mean(logits), x)}


def likelihood_heads(config) -> dict:
  """{name: flax module}: the heads a decoder likelihood adds to the network (Variant.heads of every
  Gaussian-encoder variant includes them): {'likelihood': LogSigmaHead()} for 'gaussian_learned', none
  for the fixed likelihoods."""
  return {LIKELIHOOD_HEAD: LogSigmaHead()} if config.loss.reconstruction == "gaussian_learned" else {}


_REGISTRY: dict[str, Variant] = {}


def register(variant: Variant, replace: bool = False) -> Variant:
  """Adds `variant` to the registry under its name; returns it.

  Raises ValueError when the name is taken (unless replace=True), or when one of its options is
  declared by another variant with a different default.
  """
  if variant.name in _REGISTRY and not replace and _REGISTRY[variant.name] is not variant:
    raise ValueError(f"a variant named {variant.name!r} is already registered")
  for other in _REGISTRY.values():
    if other.name == variant.name:
      continue
    for key, value in variant.options.items():
      if key in other.options and other.options[key] != value:
        raise ValueError(f"variant {variant.name!r} declares {key}={value!r}, variant {other.name!r} {other.options[key]!r}")
  _REGISTRY[variant.name] = variant
  return variant


def get(name: str) -> Variant:
  """The registered variant `name`; KeyError listing the registered names otherwise."""
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise KeyError(f"variant={name!r} is not one of {', '.join(map(repr, names()))}") from None


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def all_variants() -> tuple[Variant, ...]:
  return tuple(_REGISTRY.values())


# Helpers for objectives: the shared reconstruction term, so a variant states only what is its own.

def reconstruction(config, net) -> Callable:
  """(logits, x) -> (loss, metrics): the decoder's likelihood term of `loss.reconstruction`.

  'mse': per-element MSE of the reconstruction mean (Gaussian likelihood up to constants);
  'bce': Bernoulli cross-entropy from logits in nats per example (sum over elements), reported also
  as `recon_bce`; 'continuous_bernoulli': -log p(x | z) of the continuous Bernoulli (Loaiza-Ganem &
  Cunningham 2019, eq. 7) in nats per example, reported also as `recon_nll`. metrics always hold
  `recon_mse` (of net.mean(logits) = sigmoid(logits), the decoder's lambda). 'gaussian_learned' needs
  parameters (a Gaussian-encoder variant's `decoder_log_likelihood`): ValueError here (configs.validate
  refuses it for variants with a deterministic encoder).
  """
  kind = config.loss.reconstruction
  if kind == "gaussian_learned":
    raise ValueError("loss.reconstruction='gaussian_learned' learns its sigma: only Gaussian-encoder variants "
                     "(base.decoder_log_likelihood) take it")

  def term(logits, x):
    mse = losses.mse(net.mean(logits), x)
    if kind == "bce":
      bce = losses.bce_with_logits(logits, x)
      return bce, {"recon_bce": bce, "recon_mse": mse}
    if kind == "continuous_bernoulli":
      nll = -jnp.mean(losses.continuous_bernoulli_log_prob(logits, x))
      return nll, {"recon_nll": nll, "recon_mse": mse}
    return mse, {"recon_mse": mse}

  return term


def autoencode(net, params, x_in, key, train: bool):
  """(z, logits): encode `x_in`, decode the code. Dropout keys come from `key` when training."""
  z = net.encode(params, x_in, key, train)
  return z, net.decode(params, z, key, train)
