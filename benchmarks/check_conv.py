"""Checks that models.py's patch convolutions equal flax's native ones: parameters, outputs, gradients.

`python -m benchmarks.check_conv` exits non-zero on a mismatch. train_speed runs it before timing,
so a benchmark of `conv_impl='patches'` is always a benchmark of the same function.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import configs, models, train


def check(atol: float = 2e-5) -> list[str]:
  """Returns mismatch descriptions (empty when every upsample / downsample / init scheme agrees)."""
  errors = []
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  for upsample, downsample in (("transpose", "stride"), ("resize", "stride"), ("depth_to_space", "stride"),
                               ("nearest", "maxpool")):
    for init in ("flax", "pytorch"):
      config = configs.base_config()
      config.model.update(backbone="conv", latent_dim=8, conv_channels=(16, 32), init=init, upsample=upsample,
                          downsample=downsample)
      net = train.build_net(config, (28, 28, 1))
      ref, new = models.with_conv_impl(net, "xla").module, models.with_conv_impl(net, "patches").module
      p_ref, p_new = ref.init(jax.random.key(1), x), new.init(jax.random.key(1), x)
      tag = f"upsample={upsample} downsample={downsample} init={init}"
      if jax.tree.structure(p_ref) != jax.tree.structure(p_new):
        errors.append(f"{tag}: parameter trees differ")
        continue
      if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_new))):
        errors.append(f"{tag}: initial parameters differ")
      loss = lambda m, p: jnp.mean(jnp.square(jax.nn.sigmoid(m.apply(p, x)) - x))
      (l_ref, g_ref), (l_new, g_new) = (jax.value_and_grad(loss, 1)(m, p_ref) for m in (ref, new))
      err_out = float(jnp.max(jnp.abs(ref.apply(p_ref, x) - new.apply(p_ref, x))))
      err_grad = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_new)))
      if err_out > atol or err_grad > atol or abs(float(l_ref - l_new)) > atol:
        errors.append(f"{tag}: max |output diff| {err_out:.2e}, max |grad diff| {err_grad:.2e}")
  return errors


if __name__ == "__main__":
  problems = check()
  print("\n".join(problems) or "patch convolutions == flax convolutions (4 conv structures x 2 inits)")
  sys.exit(1 if problems else 0)
