"""Gradient accumulation gives the whole batch's loss and gradient, a microbatch at a time."""

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.smoke import smoke_config
from vdm_jax import config_validation
from vdm_jax import grad_accumulation
from vdm_jax import mesh as mesh_lib
from vdm_jax import train
from vdm_jax.errors import UserError


def test_microbatches_are_strided_and_must_be_equal():
  x = jnp.arange(8 * 3).reshape(8, 3)
  micro = grad_accumulation.split_microbatches({'x': x, 'n': jnp.arange(8)}, 2)
  np.testing.assert_array_equal(micro['n'], [[0, 2, 4, 6], [1, 3, 5, 7]])
  np.testing.assert_array_equal(micro['x'][1], x[1::2])
  with pytest.raises(ValueError, match='does not split into 3 microbatches'):
    grad_accumulation.split_microbatches({'x': x}, 3)


@pytest.mark.parametrize('num_microbatches', [1, 2, 4])
def test_accumulated_value_and_grad_equals_the_whole_batch(x64, num_microbatches):
  """A nonlinear batch-mean loss of per-example inputs (floats, ints, a None leaf): loss, metrics
  and gradient equal jax.value_and_grad on the whole batch to float64 rounding."""
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(5, 3))), 'b': jnp.asarray(rng.normal(size=3))}
  examples = {'x': jnp.asarray(rng.normal(size=(8, 5))), 'label': jnp.asarray(rng.integers(0, 3, 8)),
              'unused': None}

  def loss_fn(p, ex, key):
    del key
    logits = jnp.tanh(ex['x'] @ p['w']) * 3 + p['b']
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), ex['label'][:, None], 1)[:, 0]
    return jnp.mean(nll), {'mean_logit': jnp.mean(logits), 'mean_sq': jnp.mean(jnp.square(logits))}

  (loss, aux), grads = grad_accumulation.value_and_grad_accumulated(
      loss_fn, params, examples, num_microbatches=num_microbatches, rng=jax.random.PRNGKey(0))
  (loss_ref, aux_ref), grads_ref = jax.value_and_grad(loss_fn, has_aux=True)(
      params, examples, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
  for key in aux_ref:
    np.testing.assert_allclose(aux[key], aux_ref[key], rtol=1e-12)
  for g, g_ref in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-14)
  assert float(jnp.max(jnp.abs(grads_ref['w']))) > 1e-3  # A gradient that could differ.


class TextAwareDenoiser(flax.linen.Module):
  """A small stand-in for the U-Net, with its call signature, whose output depends nonlinearly on
  each example's own noisy video, noise level, tokens and text dropout: a microbatch that paired
  one example's video with another's tokens, t or noise would change the loss. Compiles in a
  moment, unlike the U-Net."""

  @flax.linen.compact
  def __call__(self, z, *, logsnr, text_tokens, drop_text=None, train=False, num_images=0):
    del train, num_images
    B = z.shape[0]
    text = jnp.mean(text_tokens.astype(jnp.float32), axis=1) / 100.0  # [B]
    null = self.param('null', flax.linen.initializers.constant(-0.3), ())
    if drop_text is not None:
      text = jnp.where(drop_text, null, text)
    scale = jnp.tanh(self.param('w', flax.linen.initializers.constant(0.5), (z.shape[-1],)) * z)
    gate = jax.nn.sigmoid(self.param('a', flax.linen.initializers.constant(0.2), ()) * logsnr + text)
    return scale * gate.reshape(B, *(1,) * (z.ndim - 1))


def test_train_step_with_accumulation_follows_the_whole_batch_step(tmp_path):
  """The train step with the batch in 1, 2 or 4 microbatches: the same loss, metrics and gradient
  norm over three steps, hence the same updates (t, noise and text dropout are drawn for the
  whole batch either way)."""
  config = smoke_config(tmp_path, 3)
  config.batch_size = 8
  config.optim.warmup_steps = 0
  config.model.cond_drop_prob = 0.5  # Some examples drop the text at every step.
  shape = (2, 4, 4, 3)
  model, mesh = TextAwareDenoiser(), mesh_lib.make_mesh(config)
  video = np.random.default_rng(0).uniform(-1, 1, (config.batch_size, *shape)).astype(np.float32)
  tokens = np.random.default_rng(1).integers(1, 200, (config.batch_size, 12)).astype(np.int32)

  def run(grad_accum_steps):
    config.train.grad_accum_steps = grad_accum_steps
    tx, _ = train.create_optimizer(config)
    state = jax.jit(lambda: train.create_train_state(model, tx, config, shape, jax.random.PRNGKey(0)),
                    out_shardings=mesh_lib.replicated(mesh))()
    step = train.make_train_step(model, logsnr_fn=train.create_logsnr_fn(config), tx=tx,
                                 config=config, mesh=mesh)
    history = []
    for _ in range(3):
      state, metrics = step(state, mesh_lib.global_batch({'video': video, 'tokens': tokens}, mesh))
      history.append({k: float(v) for k, v in metrics.items()})
    return history, jax.device_get(state.params)

  whole, whole_params = run(1)
  assert whole[0]['train/loss'] != whole[2]['train/loss']  # The steps did move the model.
  for k in (2, 4):
    accumulated, accumulated_params = run(k)
    for a, b in zip(whole, accumulated):
      for key in ('train/loss', 'train/grad_norm', 'train/mse_x', 'train/mse_eps'):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=f'{key}, {k} microbatches')
    for name in whole_params:
      np.testing.assert_allclose(accumulated_params[name], whole_params[name], rtol=1e-5, atol=1e-7)


def test_batch_not_divisible_by_microbatches_is_refused(tmp_path):
  config = smoke_config(tmp_path, 3)
  config.batch_size = 4
  config.train.grad_accum_steps = 3
  with pytest.raises(UserError, match='grad_accum_steps=3'):
    config_validation.validate(config)
  config.train.grad_accum_steps = 2
  with pytest.raises(UserError, match='multiple of 8'):
    config_validation.validate(config, num_devices=4)
