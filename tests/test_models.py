"""Shapes, dtypes and initializations of the Flax modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import models, train

from conftest import tiny_config


@pytest.mark.parametrize("backbone, upsample", [("mlp", "transpose"), ("linear", "transpose"), ("conv", "transpose"),
                                               ("conv", "resize"), ("conv", "depth_to_space")])
def test_shapes_and_dtypes(backbone, upsample):
  config = tiny_config(model__backbone=backbone, model__upsample=upsample)
  net = train.build_net(config, (28, 28, 1))
  x = jnp.zeros((3, 28, 28, 1))
  params = jax.jit(net.init)(jax.random.key(0), x)  # jitted: one compile, not one per operation
  z = jax.jit(net.encode)(params, x)
  assert z.shape == (3, config.model.latent_dim) and z.dtype == jnp.float32
  logits = jax.jit(net.decode)(params, z)
  assert logits.shape == (3, 28, 28, 1) and logits.dtype == jnp.float32


def test_gaussian_encoder_and_classifier_heads():
  vae = train.build_net(tiny_config("vae"), (28, 28, 1))
  x = jnp.ones((2, 28, 28, 1))
  params = vae.init(jax.random.key(0), x)
  mean, log_var = vae.encode(params, x)
  assert mean.shape == log_var.shape == (2, 8)
  sup = train.build_net(tiny_config("supervised"), (28, 28, 1))
  params = sup.init(jax.random.key(0), x)
  z = sup.encode(params, x)
  assert sup.head(params, "classifier", z).shape == (2, 10)


def test_mlp_is_the_reference_architecture():
  config = tiny_config(model__hidden=(512, 256), model__latent_dim=32)
  params = train.build_net(config, (28, 28, 1)).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  p = params["params"]
  enc = [p["encoder"][n]["kernel"].shape for n in ("Dense_0", "Dense_1", "latent")]
  dec = [p["decoder"][n]["kernel"].shape for n in ("Dense_0", "Dense_1", "Dense_2")]
  assert enc + dec == [(784, 512), (512, 256), (256, 32), (32, 256), (256, 512), (512, 784)]


def test_pytorch_init_is_uniform_with_fan_in_bound():
  config = tiny_config(model__init="pytorch", model__hidden=(512, 256))
  params = train.build_net(config, (28, 28, 1)).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  w = np.asarray(params["params"]["encoder"]["Dense_0"]["kernel"])  # fan_in 784
  b = np.asarray(params["params"]["encoder"]["Dense_0"]["bias"])
  bound = 1 / np.sqrt(784)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
  assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.01)  # variance of U(-a, a) is a^2 / 3
  assert np.abs(b).max() <= bound and np.std(b) > 0.5 * bound / np.sqrt(3)
  flax_params = train.build_net(tiny_config(model__hidden=(512, 256)), (28, 28, 1)).init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  assert np.all(np.asarray(flax_params["params"]["encoder"]["Dense_0"]["bias"]) == 0)  # flax: zero bias


def test_conv_backbone_rejects_images_it_cannot_downsample():
  with pytest.raises(models.NetworkError, match="multiples of 4"):
    train.build_net(tiny_config(model__backbone="conv"), (30, 30, 1))
  with pytest.raises(models.NetworkError, match="vectors"):
    train.build_net(tiny_config(model__backbone="conv"), (64,))
  train.build_net(tiny_config(model__backbone="mlp"), (30, 30, 1))  # the MLP takes any size...
  net = train.build_net(tiny_config(model__backbone="mlp"), (30,))  # ...and vectors
  params = net.init(jax.random.key(0), jnp.zeros((1, 30)))
  assert net.decode(params, net.encode(params, jnp.zeros((5, 30)))).shape == (5, 30)


@pytest.mark.parametrize("upsample, downsample, latent_dim", [
    ("transpose", "stride", 4), ("resize", "stride", 4), ("depth_to_space", "stride", 4), ("nearest", "maxpool", 0)])
def test_patch_convolutions_equal_flax_convolutions(upsample, downsample, latent_dim):
  """conv_impl='patches' (matmuls, fast on XLA:CPU) against flax nn.Conv / nn.ConvTranspose: same params,
  outputs and gradients."""
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  config = tiny_config("conv", model__latent_dim=latent_dim, model__upsample=upsample, model__downsample=downsample,
                       model__init="pytorch")
  net = train.build_net(config, (28, 28, 1))
  ref, new = models.with_conv_impl(net, "xla").module, models.with_conv_impl(net, "patches").module
  # Each side jitted whole: one compile per program, not one per operation.
  params = jax.jit(ref.init)(jax.random.key(1), x)
  same = jax.jit(new.init)(jax.random.key(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(same)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same)):
    np.testing.assert_array_equal(a, b)
  def out_and_grad(m):  # the network's output and the gradient of a reconstruction loss, in one program
    loss = lambda p: jnp.mean(jnp.square(jax.nn.sigmoid(m.apply(p, x)) - x))
    return jax.jit(lambda p: (m.apply(p, x), jax.grad(loss)(p)))(params)

  (y_new, g_new), (y_ref, g_ref) = out_and_grad(new), out_and_grad(ref)
  np.testing.assert_allclose(y_new, y_ref, atol=2e-5)
  for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("form", ["gather", "scatter", "dispatch"])
@pytest.mark.parametrize("cout", [1, 3, 6])
def test_conv_transpose3x3_s2_forms_equal_lax_conv_transpose(form, cout):
  """Both matmul forms of the stride-2 transposed conv (and the dispatcher) against lax.conv_transpose:
  values and gradients in x and the kernel, at odd sizes (h != w) and a random cotangent."""
  fn = {"gather": models.conv_transpose3x3_s2_gather, "scatter": models.conv_transpose3x3_s2_scatter,
        "dispatch": models.conv_transpose3x3_s2}[form]
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, cout))
  ref = lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  g = jax.random.normal(jax.random.key(2), (2, 6, 10, cout))
  np.testing.assert_allclose(jax.jit(fn)(x, kernel), ref(x, kernel), atol=1e-5)
  grads = jax.jit(jax.grad(lambda x, k: jnp.sum(fn(x, k) * g), (0, 1)))(x, kernel)
  grads_ref = jax.jit(jax.grad(lambda x, k: jnp.sum(ref(x, k) * g), (0, 1)))(x, kernel)
  for a, b in zip(grads, grads_ref):
    np.testing.assert_allclose(a, b, atol=1e-4)
