"""Gradient accumulation: one optimizer step's gradient computed a microbatch at a time.

Activation memory grows with the batch a forward/backward pass holds at once. Splitting the
global batch into k microbatches and summing their gradients inside one compiled step (a
`lax.scan`, so the program holds one microbatch's activations at a time) gives the gradient of
the whole batch's mean loss for about 1/k of the activation memory. On XLA:CPU this is the lever
that works; rematerialisation (`model.remat`) did not lower memory there (benchmarks/remat_memory.py).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp


def split_microbatches(examples: Any, num_microbatches: int) -> Any:
  """Every leaf [B, ...] -> [k, B / k, ...]; microbatch j holds examples j, k + j, 2k + j, ...

  Strided rather than contiguous so that a batch sharded in contiguous blocks over devices
  (batch axis first) keeps each device's examples on that device: with B / k a multiple of the
  device count, the [B / k] axis keeps the batch's sharding and no data moves between devices.
  """
  k = num_microbatches

  def split(x):
    B = x.shape[0]
    if B % k:
      raise ValueError(f'Batch of {B} does not split into {k} microbatches '
                       f'(train.grad_accum_steps={k}).')
    return jnp.swapaxes(x.reshape(B // k, k, *x.shape[1:]), 0, 1)

  return jax.tree.map(split, examples)


def value_and_grad_accumulated(
    loss_fn: Callable[..., tuple[jax.Array, dict[str, jax.Array]]],
    params: Any,
    examples: Any,
    *,
    num_microbatches: int,
    rng: jax.Array,
) -> tuple[tuple[jax.Array, dict[str, jax.Array]], Any]:
  """`jax.value_and_grad(loss_fn, has_aux=True)` of a batch-mean loss, a microbatch at a time.

    loss_fn(params, examples, rng) -> (loss, aux): the mean over the examples it is given (every
      leaf of `examples` has the batch axis first) and a flat dict of scalar metrics, each also
      a mean over those examples.
    Returns ((loss, aux), grads) of the whole batch: the means over the k equal microbatches of
    each microbatch's loss, metrics and gradient, which equal the whole-batch mean loss, metrics
    and its gradient exactly in exact arithmetic. `rng` goes to loss_fn unchanged when k = 1, and
    folded with the microbatch index otherwise (for dropout: the masks differ from a k = 1 step,
    their distribution does not).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_microbatches == 1:
    return grad_fn(params, examples, rng)
  micro = split_microbatches(examples, num_microbatches)

  def accumulate(carry, inputs):
    index, microbatch = inputs
    (loss, aux), grads = grad_fn(params, microbatch, jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, ((loss, aux), grads)), None

  # The carry's structure and dtypes are those of one microbatch's result (zeros to start).
  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grad_fn, params, first, rng))
  total, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(num_microbatches), micro))
  return jax.tree.map(lambda x: x / num_microbatches, total)
