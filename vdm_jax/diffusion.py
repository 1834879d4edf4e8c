"""Forward process, parameterisation conversions and the training loss.

Variance-preserving diffusion in log-SNR form (Kingma et al. 2021, VDM):

    z = alpha x + sigma eps,  alpha^2 = sigmoid(lambda),  sigma^2 = sigmoid(-lambda),  eps ~ N(0, I).

Everything here is a pure function. `logsnr` has shape [B] and broadcasts against x, z, eps of
shape [B, ...] (e.g. [batch, frames, height, width, channels]); a scalar logsnr also works.
The network is passed in as a callable; this module knows nothing about it.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from vdm_jax.schedules import alpha_sigma

PARAMETERIZATIONS = ('eps', 'v')
# Weightings of the x-space error ||x - x_hat||^2 as functions of SNR = exp(lambda):
#   eps_mse:   SNR                (Ho et al. 2020's L_simple on eps)
#   v_mse:     SNR + 1            (Salimans & Ho 2022: the MSE on v)
#   x_mse:     1
#   snr_trunc: max(SNR, 1)        (Salimans & Ho 2022, "truncated SNR")
#   min_snr:   min(SNR, gamma)    (Hang et al. 2023, "Min-SNR weighting", gamma = 5)
LOSS_WEIGHTINGS = ('eps_mse', 'v_mse', 'x_mse', 'snr_trunc', 'min_snr')


def check_parameterization(parameterization: str) -> None:
  """Raises ValueError unless parameterization is one of PARAMETERIZATIONS."""
  if parameterization not in PARAMETERIZATIONS:
    raise ValueError(
        f'Unknown parameterization {parameterization!r}; allowed values: {PARAMETERIZATIONS}.')


def check_loss_weighting(loss_weighting: str) -> None:
  """Raises ValueError unless loss_weighting is one of LOSS_WEIGHTINGS."""
  if loss_weighting not in LOSS_WEIGHTINGS:
    raise ValueError(
        f'Unknown loss_weighting {loss_weighting!r}; allowed values: {LOSS_WEIGHTINGS}.')


def log_x_weight(loss_weighting: str, logsnr: jax.Array, *, min_snr_gamma: float = 5.0) -> jax.Array:
  """log w(lambda) of the x-space loss w ||x - x_hat||^2 (see LOSS_WEIGHTINGS), in log space so
  that lambda = +-20 neither overflows nor loses the small factors."""
  check_loss_weighting(loss_weighting)
  logsnr = jnp.asarray(logsnr)
  return {
      'eps_mse': lambda: logsnr,
      'v_mse': lambda: jax.nn.softplus(logsnr),
      'x_mse': lambda: jnp.zeros_like(logsnr),
      'snr_trunc': lambda: jnp.maximum(logsnr, 0.0),
      'min_snr': lambda: jnp.minimum(logsnr, jnp.log(min_snr_gamma)),
  }[loss_weighting]()


def target_loss_weight_fn(loss_weighting: str, *, parameterization: str,
                          min_snr_gamma: float = 5.0) -> Callable[[jax.Array], jax.Array]:
  """The per-example factor that turns the network's own target MSE into `loss_weighting`.

  ||eps - eps_hat||^2 = SNR ||x - x_hat||^2 and ||v - v_hat||^2 = (SNR + 1) ||x - x_hat||^2, so the
  factor is w(lambda) / SNR for 'eps' and w(lambda) / (SNR + 1) for 'v'. Returns logsnr [B] -> [B];
  pass it as `diffusion_loss(..., loss_weighting=...)`.
  """
  check_parameterization(parameterization)
  check_loss_weighting(loss_weighting)
  natural = 'eps_mse' if parameterization == 'eps' else 'v_mse'

  def weight(logsnr):
    return jnp.exp(log_x_weight(loss_weighting, logsnr, min_snr_gamma=min_snr_gamma)
                   - log_x_weight(natural, logsnr))
  return weight


def _alpha_sigma_like(logsnr: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """alpha, sigma of logsnr [B] reshaped to [B, 1, ..., 1] to broadcast against x [B, ...]."""
  logsnr = jnp.asarray(logsnr)
  logsnr = jnp.reshape(logsnr, logsnr.shape + (1,) * (jnp.ndim(x) - logsnr.ndim))
  return alpha_sigma(logsnr)


def q_sample(x: jax.Array, *, logsnr: jax.Array, noise: jax.Array) -> jax.Array:
  """Sample q(z | x) = N(alpha x, sigma^2 I):  z = alpha x + sigma noise.

  x, noise: [B, ...]; logsnr: [B]. Returns z: [B, ...].
  """
  alpha, sigma = _alpha_sigma_like(logsnr, x)
  return alpha * x + sigma * noise


def x_from_eps(*, z: jax.Array, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
  """x = (z - sigma eps) / alpha."""
  alpha, sigma = _alpha_sigma_like(logsnr, z)
  return (z - sigma * eps) / alpha


def eps_from_x(*, z: jax.Array, x: jax.Array, logsnr: jax.Array) -> jax.Array:
  """eps = (z - alpha x) / sigma."""
  alpha, sigma = _alpha_sigma_like(logsnr, z)
  return (z - alpha * x) / sigma


def v_from_x_eps(*, x: jax.Array, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
  """v = alpha eps - sigma x (Salimans & Ho 2022, "Progressive Distillation", sec. 4)."""
  alpha, sigma = _alpha_sigma_like(logsnr, x)
  return alpha * eps - sigma * x


def x_from_v(*, z: jax.Array, v: jax.Array, logsnr: jax.Array) -> jax.Array:
  """x = alpha z - sigma v  (since alpha^2 + sigma^2 = 1; Salimans & Ho 2022)."""
  alpha, sigma = _alpha_sigma_like(logsnr, z)
  return alpha * z - sigma * v


def eps_from_v(*, z: jax.Array, v: jax.Array, logsnr: jax.Array) -> jax.Array:
  """eps = sigma z + alpha v  (Salimans & Ho 2022)."""
  alpha, sigma = _alpha_sigma_like(logsnr, z)
  return sigma * z + alpha * v


def predict_x_eps(
    model_out: jax.Array, *, z: jax.Array, logsnr: jax.Array, parameterization: str,
) -> tuple[jax.Array, jax.Array]:
  """(x_hat, eps_hat) from the network output, in at least float32.

  'eps': eps_hat = out, x_hat = (z - sigma eps_hat) / alpha           (Ho et al. 2020).
  'v':   x_hat = alpha z - sigma out, eps_hat = sigma z + alpha out   (Salimans & Ho 2022).
  model_out, z: [B, ...]; logsnr: [B].
  """
  check_parameterization(parameterization)
  model_out = jnp.asarray(model_out)
  model_out = model_out.astype(jnp.promote_types(model_out.dtype, jnp.float32))
  if parameterization == 'eps':
    return x_from_eps(z=z, eps=model_out, logsnr=logsnr), model_out
  return x_from_v(z=z, v=model_out, logsnr=logsnr), eps_from_v(z=z, v=model_out, logsnr=logsnr)


def diffusion_loss(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    *,
    rng: jax.Array,
    logsnr_fn: Callable[[jax.Array], jax.Array],
    parameterization: str,
    loss_weighting: Optional[Callable[[jax.Array], jax.Array]] = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Denoising loss with t ~ U[0, 1] per example.

    t ~ U[0, 1] [B],  lambda = logsnr_fn(t),  eps ~ N(0, I),  z = alpha x + sigma eps,
    out = model_fn(z, lambda),
    'eps': loss = mean ||eps - out||^2                     (Ho et al. 2020, "L_simple"),
           = mean (alpha^2 / sigma^2) ||x - x_hat||^2, the SNR-weighted x-loss;
    'v':   loss = mean ||v - out||^2,  v = alpha eps - sigma x
           = mean (1 + alpha^2 / sigma^2) ||x - x_hat||^2  (Salimans & Ho 2022).

  The mean is over all elements. With `loss_weighting(lambda) -> w [B]`, each example's MSE is
  multiplied by w before the batch mean (None: w = 1, the natural MSE of the target).

  Args:
    model_fn: (z [B, ...], logsnr [B] float32) -> out [B, ...]. Dropout rngs and conditioning
      are the caller's business (close over them).
    x: data [B, ...] (e.g. [batch, frames, height, width, channels]) in [-1, 1].
    rng: PRNG key for t and eps.
    logsnr_fn: t [B] -> logsnr [B].
    parameterization: one of PARAMETERIZATIONS.
    loss_weighting: optional per-example weight as a function of logsnr.

  Returns:
    (loss, metrics): float32 scalar loss (float64 for float64 x) and a flat dict with 'loss',
    'mse_eps' (mean ||eps - eps_hat||^2) and 'mse_x' (mean ||x - clip(x_hat, -1, 1)||^2; x_hat
    is clipped as the sampler does, since for eps-prediction it is unbounded as lambda -> -inf).
  """
  check_parameterization(parameterization)
  x = jnp.asarray(x)
  dtype = jnp.promote_types(x.dtype, jnp.float32)  # the loss stays float32 whatever the model
  x = x.astype(dtype)
  B = x.shape[0]
  rng_t, rng_noise = jax.random.split(rng)
  t = jax.random.uniform(rng_t, (B,), dtype=dtype)
  noise = jax.random.normal(rng_noise, x.shape, dtype=dtype)
  logsnr = jnp.asarray(logsnr_fn(t), dtype)
  z = q_sample(x, logsnr=logsnr, noise=noise)
  out = jnp.asarray(model_fn(z, logsnr)).astype(dtype)
  assert out.shape == x.shape, f'model output {out.shape} != data {x.shape}'
  x_hat, eps_hat = predict_x_eps(out, z=z, logsnr=logsnr, parameterization=parameterization)
  if parameterization == 'eps':
    target = noise
  else:
    target = v_from_x_eps(x=x, eps=noise, logsnr=logsnr)

  reduce_axes = tuple(range(1, x.ndim))
  per_example = jnp.mean(jnp.square(out - target), axis=reduce_axes)  # [B]
  if loss_weighting is not None:
    per_example = per_example * jnp.asarray(loss_weighting(logsnr), dtype)
  loss = jnp.mean(per_example)
  metrics = {
      'loss': loss,
      'mse_eps': jnp.mean(jnp.square(noise - eps_hat)),
      'mse_x': jnp.mean(jnp.square(x - jnp.clip(x_hat, -1.0, 1.0))),
  }
  return loss, metrics
