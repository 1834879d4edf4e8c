"""XLA compiler options of the train step: on CPU, `train.cpu_ynn_reductions=False` keeps the
reductions out of YNNPACK, so that a GroupNorm's backward pass no longer writes its broadcasts
out as full-size arrays (less memory), with the same values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments import moving_shapes
from tests.smoke import smoke_config
from vdm_jax import mesh as mesh_lib
from vdm_jax import train
from vdm_jax import xla_options


def options(ynn_reductions: bool) -> dict:
  config = moving_shapes.get_config()
  config.train.cpu_ynn_reductions = ynn_reductions
  return xla_options.train_step_options(config)


def test_default_options_are_xla_defaults():
  assert options(True) == {}


def test_without_ynn_reductions_a_group_norm_gradient_needs_less_memory_for_the_same_values():
  """The U-Net's GroupNorm -> SiLU, differentiated: XLA:CPU's temporary memory with the option
  is at most 3/4 of the default's (measured: 0.02 against 1.0 MiB), and the gradients agree."""
  assert jax.default_backend() == 'cpu'
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 16, 16, 64)), jnp.float32)
  norm = nn.GroupNorm(num_groups=32, reduction_axes=(-3, -2, -1))
  params = norm.init(jax.random.PRNGKey(0), x)
  grad = jax.grad(lambda p, x: jnp.sum(nn.silu(norm.apply(p, x)) ** 2), argnums=(0, 1))

  def compiled(opts):
    return jax.jit(grad, compiler_options=opts).lower(params, x).compile()

  default, low_memory = compiled(options(True)), compiled(options(False))
  assert '__ynn_fusion' in default.as_text()  # XLA's default hands reductions to YNNPACK ...
  assert '__ynn_fusion' not in low_memory.as_text()  # ... the option keeps them in XLA.
  temp = lambda c: c.memory_analysis().temp_size_in_bytes
  assert temp(low_memory) <= 0.75 * temp(default), (temp(low_memory), temp(default))
  for a, b in zip(jax.tree.leaves(default(params, x)), jax.tree.leaves(low_memory(params, x))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))


class NormDenoiser(nn.Module):
  """A stand-in for the U-Net with its call signature: GroupNorm -> SiLU of the noisy video."""

  @nn.compact
  def __call__(self, z, *, logsnr, text_tokens, drop_text=None, train=False, num_images=0):
    del logsnr, text_tokens, drop_text, train, num_images
    return nn.silu(nn.GroupNorm(num_groups=1, reduction_axes=(-3, -2, -1))(z))


def test_train_step_is_compiled_with_the_configs_options(tmp_path):
  """train.make_train_step passes the options: with cpu_ynn_reductions=False its compiled step
  has no YNN reduction fusions (this stand-in has no dots or convolutions), by default it has."""
  config = smoke_config(tmp_path, 1)
  shape = (4, 32, 32, 3)  # With 4x4 frames XLA made no YNN fusion at all, options or not.
  model, mesh = NormDenoiser(), mesh_lib.make_mesh(config)
  batch = mesh_lib.global_batch(
      {'video': np.zeros((config.batch_size, *shape), np.float32),
       'tokens': np.ones((config.batch_size, config.data.max_text_length), np.int32)}, mesh)

  def compiled_text(ynn_reductions):
    config.train.cpu_ynn_reductions = ynn_reductions
    tx, _ = train.create_optimizer(config)
    state = jax.eval_shape(lambda: train.create_train_state(model, tx, config, shape,
                                                            jax.random.PRNGKey(0)))
    step = train.make_train_step(model, logsnr_fn=train.create_logsnr_fn(config), tx=tx,
                                 config=config, mesh=mesh)
    return step.lower(state, batch).compile().as_text()

  assert '__ynn_fusion' in compiled_text(True)
  assert '__ynn_fusion' not in compiled_text(False)
