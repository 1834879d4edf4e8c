"""Forward process, parameterisation conversions and the training loss.

Variance-preserving diffusion in log-SNR form (Kingma et al. 2021, VDM):

    z = alpha x + sigma eps,  alpha^2 = sigmoid(lambda),  sigma^2 = sigmoid(-lambda),  eps ~ N(0, I).

Everything here is a pure function. `logsnr` has shape [B] and broadcasts against x, z, eps of
shape [B, ...] (e.g. [batch, frames, height, width, channels]); a scalar logsnr also works.
The network is passed in as a callable; this module knows nothing about it.
"""

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from vdm_jax.noise_prior import INDEPENDENT, NoisePrior
from vdm_jax.schedules import ENDPOINT_PARAMS
from vdm_jax.schedules import alpha_sigma

PARAMETERIZATIONS = ('eps', 'x', 'v')
# Weightings of the x-space error ||x - x_hat||^2 as functions of SNR = exp(lambda):
#   eps_mse:   SNR                (Ho et al. 2020's L_simple on eps)
#   v_mse:     SNR + 1            (Salimans & Ho 2022: the MSE on v)
#   x_mse:     1
#   snr_trunc: max(SNR, 1)        (Salimans & Ho 2022, "truncated SNR")
#   min_snr:   min(SNR, gamma)    (Hang et al. 2023, "Min-SNR weighting", gamma = 5)
#   vlb:       -1/2 dlambda/dt SNR (Kingma et al. 2021, eq. 17: the continuous-time diffusion
#              loss, an unbiased estimate of the VLB's diffusion term; needs dlambda/dt)
LOSS_WEIGHTINGS = ('eps_mse', 'v_mse', 'x_mse', 'snr_trunc', 'min_snr', 'vlb')
# The weighting whose loss is the plain MSE of each parameterization's own target.
NATURAL_WEIGHTING = {'eps': 'eps_mse', 'x': 'x_mse', 'v': 'v_mse'}


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


def log_x_weight(loss_weighting: str, logsnr: jax.Array, *, min_snr_gamma: float = 5.0,
                 dlogsnr_dt: Optional[jax.Array] = None) -> jax.Array:
  """log w(lambda) of the x-space loss w ||x - x_hat||^2 (see LOSS_WEIGHTINGS), in log space so
  that lambda = +-20 neither overflows nor loses the small factors.

  'vlb' needs dlogsnr_dt (same shape as logsnr, < 0 for a decreasing schedule):
  log w = log(-dlambda/dt / 2) + lambda.
  """
  check_loss_weighting(loss_weighting)
  logsnr = jnp.asarray(logsnr)
  if loss_weighting == 'vlb':
    if dlogsnr_dt is None:
      raise ValueError("loss_weighting 'vlb' needs dlogsnr_dt (the schedule's derivative).")
    return jnp.log(-0.5 * jnp.asarray(dlogsnr_dt)) + logsnr
  return {
      'eps_mse': lambda: logsnr,
      'v_mse': lambda: jax.nn.softplus(logsnr),
      'x_mse': lambda: jnp.zeros_like(logsnr),
      'snr_trunc': lambda: jnp.maximum(logsnr, 0.0),
      'min_snr': lambda: jnp.minimum(logsnr, jnp.log(min_snr_gamma)),
  }[loss_weighting]()


def target_loss_weight_fn(loss_weighting: str, *, parameterization: str,
                          min_snr_gamma: float = 5.0) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The per-example factor that turns the network's own target MSE into `loss_weighting`.

  ||eps - eps_hat||^2 = SNR ||x - x_hat||^2 and ||v - v_hat||^2 = (SNR + 1) ||x - x_hat||^2, so the
  factor is w(lambda) / SNR for 'eps', w(lambda) / (SNR + 1) for 'v' and w(lambda) for 'x'.
  Returns (logsnr [B], dlogsnr_dt [B]) -> [B]; pass it as `diffusion_loss(..., loss_weighting=...)`.
  """
  check_parameterization(parameterization)
  check_loss_weighting(loss_weighting)
  natural = NATURAL_WEIGHTING[parameterization]

  def weight(logsnr, dlogsnr_dt=None):
    return jnp.exp(log_x_weight(loss_weighting, logsnr, min_snr_gamma=min_snr_gamma,
                                dlogsnr_dt=dlogsnr_dt)
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
  'x':   x_hat = out, eps_hat = (z - alpha x_hat) / sigma             (Kingma et al. 2021).
  'v':   x_hat = alpha z - sigma out, eps_hat = sigma z + alpha out   (Salimans & Ho 2022).
  model_out, z: [B, ...]; logsnr: [B].
  """
  check_parameterization(parameterization)
  model_out = jnp.asarray(model_out)
  model_out = model_out.astype(jnp.promote_types(model_out.dtype, jnp.float32))
  if parameterization == 'eps':
    return x_from_eps(z=z, eps=model_out, logsnr=logsnr), model_out
  if parameterization == 'x':
    return model_out, eps_from_x(z=z, x=model_out, logsnr=logsnr)
  return x_from_v(z=z, v=model_out, logsnr=logsnr), eps_from_v(z=z, v=model_out, logsnr=logsnr)


TIME_DISTRIBUTIONS = ('uniform', 'logit_normal')


def check_time_distribution(distribution: str) -> None:
  if distribution not in TIME_DISTRIBUTIONS:
    raise ValueError(f'Unknown training time distribution {distribution!r}; allowed: {TIME_DISTRIBUTIONS}.')


def sample_time(rng: jax.Array, batch_size: int, *, antithetic: bool = False,
                distribution: str = 'uniform', logit_mean: float = 0.0, logit_std: float = 1.0,
                uniform_fraction: float = 0.0, dtype=jnp.float32) -> jax.Array:
  """t [batch_size] in [0, 1): i.i.d. uniform, or antithetic (Kingma et al. 2021, appendix:
  "low-discrepancy sampler")

    t_i = mod(u_0 + i / B, 1),  u_0 ~ U[0, 1),  i = 0..B-1,

  each t_i still uniform, but the batch covers [0, 1) evenly, which lowers the variance of the
  batch-mean loss.

  distribution='logit_normal' maps those uniform draws u through the inverse CDF of a
  logit-normal (Esser et al. 2024, sec. 3.1): t = sigmoid(logit_mean + logit_std * Phi^-1(u)),
  so antithetic draws stay stratified. logit_mean > 0 puts more of the batch at high noise
  (t near 1). With uniform_fraction f, the first round(f B) examples keep their uniform t, so
  every noise level stays trained: p(t) = f + (1 - f) q(t). A density p(t) other than uniform
  multiplies the loss weighting by p(t): the same as a weighting, but with more draws (less
  gradient variance) where p is large.
  """
  check_time_distribution(distribution)
  if antithetic:
    u0 = jax.random.uniform(rng, (), dtype=dtype)
    u = jnp.mod(u0 + jnp.arange(batch_size, dtype=dtype) / batch_size, 1.0)
  else:
    u = jax.random.uniform(rng, (batch_size,), dtype=dtype)
  if distribution == 'uniform':
    return u
  # u = 0 would give Phi^-1 = -inf (t = 0, harmless), but keep every draw strictly inside.
  tiny = jnp.finfo(dtype).tiny
  t = jax.nn.sigmoid(logit_mean + logit_std * jax.scipy.special.ndtri(
      jnp.clip(u, tiny, 1.0 - jnp.finfo(dtype).eps)))
  num_uniform = int(round(uniform_fraction * batch_size))
  return jnp.where(jnp.arange(batch_size) < num_uniform, u, t)


def logit_normal_density(t: jax.Array, *, logit_mean: float, logit_std: float,
                         uniform_fraction: float = 0.0) -> jax.Array:
  """p(t) = f + (1 - f) q(t), q that of t = sigmoid(m + s n), n ~ N(0, 1), for t in (0, 1): the
  factor this training distribution puts on the loss weighting."""
  logit = jnp.log(t) - jnp.log1p(-t)
  z = (logit - logit_mean) / logit_std
  q = jnp.exp(-0.5 * z**2) / (logit_std * jnp.sqrt(2 * jnp.pi) * t * (1 - t))
  return uniform_fraction + (1.0 - uniform_fraction) * q


def logsnr_and_derivative(logsnr_fn: Callable[[jax.Array], jax.Array],
                          t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(lambda(t), dlambda/dt(t)), elementwise, by one forward-mode pass (jax.jvp): t [B] -> [B], [B]."""
  return jax.jvp(logsnr_fn, (t,), (jnp.ones_like(t),))


def denoising_terms(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    *,
    t: jax.Array,
    noise: jax.Array,
    logsnr_fn: Callable[[jax.Array], jax.Array],
    parameterization: str,
    frame_weights: Optional[jax.Array] = None,
) -> dict[str, jax.Array]:
  """Per-example terms of the denoising loss at given times t [B] and noise [B, ...]:

    lambda = logsnr_fn(t),  z = alpha x + sigma noise,  out = model_fn(z, lambda),
    target = noise ('eps'), x ('x') or alpha noise - sigma x ('v'),

  returning float32 (float64 for float64 x) arrays of shape [B]: 'logsnr', 'dlogsnr_dt',
  'mse_target' (mean over elements of (out - target)^2), 'mse_x' (of (x - x_hat)^2, x_hat
  unclipped) and 'mse_eps' (of (noise - eps_hat)^2), and 'mse_x_clipped' (x_hat clipped to
  [-1, 1], as the sampler does).

  A model_fn may return a pair (network, correction) whose sum is the prediction (a residual
  head, models/unet.py layout_head): 'mse_target' is then the network's alone, and 'mse_head_x'
  the x-error of stop_gradient(network) + correction, so that the head learns what the network
  leaves and the network trains as it would without the head.

  frame_weights: None, or [B, T] for videos x [B, T, ...]: each mean becomes the weighted mean
  over frames, sum_t w_t sum_i a_ti^2 / (sum_t w_t * elements per frame) (frame conditioning
  leaves the given frames out with w = 0, see frame_conditioning.loss_frame_weights).
  """
  check_parameterization(parameterization)
  x = jnp.asarray(x)
  dtype = jnp.promote_types(x.dtype, jnp.float32)  # the loss stays float32 whatever the model
  x = x.astype(dtype)
  t = jnp.asarray(t, dtype)
  noise = jnp.asarray(noise, dtype)
  logsnr, dlogsnr_dt = logsnr_and_derivative(lambda u: jnp.asarray(logsnr_fn(u), dtype), t)
  z = q_sample(x, logsnr=logsnr, noise=noise)
  out = model_fn(z, logsnr)
  # A network with a residual head returns (network, correction) (models/unet.py layout_head).
  network, correction = out if isinstance(out, tuple) else (out, None)
  network = jnp.asarray(network).astype(dtype)
  assert network.shape == x.shape, f'model output {network.shape} != data {x.shape}'
  out = network if correction is None else network + jnp.asarray(correction).astype(dtype)
  x_hat, eps_hat = predict_x_eps(out, z=z, logsnr=logsnr, parameterization=parameterization)
  target = {'eps': lambda: noise, 'x': lambda: x,
            'v': lambda: v_from_x_eps(x=x, eps=noise, logsnr=logsnr)}[parameterization]()
  mean = lambda a: jnp.mean(jnp.square(a), axis=tuple(range(1, x.ndim)))
  if frame_weights is not None:
    w = jnp.asarray(frame_weights, dtype)
    assert w.shape == x.shape[:2], (w.shape, x.shape)
    per_frame = lambda a: jnp.mean(jnp.square(a), axis=tuple(range(2, x.ndim)))  # [B, T]
    mean = lambda a: jnp.sum(w * per_frame(a), 1) / jnp.maximum(jnp.sum(w, 1), 1e-12)
  terms = {'logsnr': logsnr, 'dlogsnr_dt': dlogsnr_dt, 'mse_target': mean(network - target),
           'mse_x': mean(x - x_hat), 'mse_eps': mean(noise - eps_hat),
           'mse_x_clipped': mean(x - jnp.clip(x_hat, -1.0, 1.0))}
  if correction is not None:
    # The head learns what the network leaves: the x-error of network + correction with the
    # network held fixed, unweighted (the x-error is what it corrects, at high noise where the
    # usual weights are ~SNR); the network's own term, and so its gradient, is unchanged by it.
    head_out = jax.lax.stop_gradient(network) + jnp.asarray(correction).astype(dtype)
    terms['mse_head_x'] = mean(x - predict_x_eps(head_out, z=z, logsnr=logsnr,
                                                 parameterization=parameterization)[0])
  return terms


def vlb_diffusion_term(*, mse_x: jax.Array, logsnr: jax.Array, dlogsnr_dt: jax.Array) -> jax.Array:
  """The continuous-time diffusion loss per data dimension (Kingma et al. 2021, eq. 17), one
  Monte Carlo sample per example:

    L_inf = -1/2 dlambda/dt exp(lambda) mean ||x - x_hat||^2,   t ~ U[0, 1],

  in nats per dimension (multiply by the dimension for the whole example). All args [B]."""
  return -0.5 * dlogsnr_dt * jnp.exp(logsnr) * mse_x


def grads_with_learned_schedule(
    per_example_fn: Callable[[Any, Any], tuple[tuple[jax.Array, jax.Array], Any]],
    params: Any,
    schedule_params: Any,
    *,
    endpoint_terms_fn: Optional[Callable[[Any], jax.Array]] = None,
) -> tuple[jax.Array, Any, Any, Any]:
  """Gradients when the schedule is learned (Kingma et al. 2021, sec. 5: the continuous-time VLB
  depends on the schedule only through its endpoints, so the schedule's shape eta is trained to
  minimise the variance of the VLB estimate, i.e. E[L_vlb^2]):

    grad_params = d/d params  mean_b loss_b             (the network's loss, schedule fixed),
    grad_eta    = d/d eta     mean_b L_vlb,b^2 = mean_b 2 L_vlb,b dL_vlb,b/d eta  (network fixed).

  per_example_fn(params, schedule_params) -> ((loss [B], vlb [B]), aux): the weighted loss and the
  VLB diffusion term (vlb_diffusion_term) of each example from one forward pass. One forward pass
  (jax.vjp) and two backward passes, one per cotangent.

  Learned endpoints (schedules.LearnedSchedule with learn_endpoints): endpoint_terms_fn(
  schedule_params) -> scalar, the batch mean of the VLB's other terms per dimension (prior KL and
  reconstruction, likelihood.endpoint_terms). The endpoint parameters (schedules.ENDPOINT_PARAMS)
  then get the gradient of the whole VLB estimate instead (VDM: the endpoints trade the prior and
  reconstruction terms against the diffusion term):

    grad_endpoints = d/d endpoints (mean_b loss_b + endpoint_terms_fn),

  read from the first backward pass: the loss must be the VLB diffusion term itself
  (loss_weighting 'vlb', which the learned schedule requires), so no third pass is needed.

  Returns (mean loss, aux, grad_params, grad_eta).
  """
  (loss, vlb), vjp_fn, aux = jax.vjp(per_example_fn, params, schedule_params, has_aux=True)
  B = loss.shape[0]
  zeros = jnp.zeros_like(loss)
  grad_params, grad_loss_eta = vjp_fn((jnp.full_like(loss, 1.0 / B), zeros))
  _, grad_eta = vjp_fn((zeros, 2.0 * jax.lax.stop_gradient(vlb) / B))
  if endpoint_terms_fn is None:
    return jnp.mean(loss), aux, grad_params, grad_eta
  names = [k for k in schedule_params if k in ENDPOINT_PARAMS]
  if not names:
    raise ValueError(f'endpoint_terms_fn given, but the schedule has none of the endpoint '
                     f'parameters {ENDPOINT_PARAMS} (LearnedSchedule(learn_endpoints=True) has them).')
  endpoints = {k: schedule_params[k] for k in names}
  # Forward mode: two scalars in, and no residuals kept (the 256-way decoder of a whole batch).
  grad_terms = jax.jacfwd(lambda e: endpoint_terms_fn({**schedule_params, **e}))(endpoints)
  grad_eta = {k: grad_loss_eta[k] + grad_terms[k] if k in endpoints else g
              for k, g in grad_eta.items()}
  return jnp.mean(loss), aux, grad_params, grad_eta


def diffusion_loss(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    *,
    rng: jax.Array,
    logsnr_fn: Callable[[jax.Array], jax.Array],
    parameterization: str,
    loss_weighting: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
    antithetic_time: bool = False,
    frame_weights: Optional[jax.Array] = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Denoising loss with t ~ U[0, 1] per example.

    t ~ U[0, 1] [B],  lambda = logsnr_fn(t),  eps ~ N(0, I),  z = alpha x + sigma eps,
    out = model_fn(z, lambda),
    'eps': loss = mean ||eps - out||^2                     (Ho et al. 2020, "L_simple"),
           = mean (alpha^2 / sigma^2) ||x - x_hat||^2, the SNR-weighted x-loss;
    'x':   loss = mean ||x - out||^2, the unweighted x-loss;
    'v':   loss = mean ||v - out||^2,  v = alpha eps - sigma x
           = mean (1 + alpha^2 / sigma^2) ||x - x_hat||^2  (Salimans & Ho 2022).

  The mean is over all elements. With `loss_weighting(lambda, dlambda/dt) -> w [B]` (see
  target_loss_weight_fn), each example's MSE is multiplied by w before the batch mean (None:
  w = 1, the natural MSE of the target).

  Args:
    model_fn: (z [B, ...], logsnr [B] float32) -> out [B, ...]. Dropout rngs and conditioning
      are the caller's business (close over them).
    x: data [B, ...] (e.g. [batch, frames, height, width, channels]) in [-1, 1].
    rng: PRNG key for t and eps.
    logsnr_fn: t [B] -> logsnr [B], differentiable in t (dlambda/dt is taken by jax.jvp).
    parameterization: one of PARAMETERIZATIONS.
    loss_weighting: optional per-example weight as a function of (logsnr, dlogsnr_dt).
    antithetic_time: draw t antithetically (sample_time).
    frame_weights: optional [B, T] weights of the frames in each mean (denoising_terms).

  Returns:
    (loss, metrics): float32 scalar loss (float64 for float64 x) and a flat dict with 'loss',
    'mse_eps' (mean ||eps - eps_hat||^2) and 'mse_x' (mean ||x - clip(x_hat, -1, 1)||^2; x_hat
    is clipped as the sampler does, since for eps-prediction it is unbounded as lambda -> -inf).
  """
  return batch_loss_and_metrics(*per_example_loss(
      model_fn, x, rng=rng, logsnr_fn=logsnr_fn, parameterization=parameterization,
      loss_weighting=loss_weighting, antithetic_time=antithetic_time, frame_weights=frame_weights))


def batch_loss_and_metrics(per_example: jax.Array,
                           terms: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """diffusion_loss's (loss, metrics) from per_example_loss's (loss [B], terms): the batch means."""
  loss = jnp.mean(per_example)
  metrics = {
      'loss': loss,
      'mse_eps': jnp.mean(terms['mse_eps']),
      'mse_x': jnp.mean(terms['mse_x_clipped']),
  }
  if 'mse_head_x' in terms:
    metrics['mse_head_x'] = jnp.mean(terms['mse_head_x'])
  return loss, metrics


def draw_time_and_noise(rng: jax.Array, x: jax.Array, *, antithetic: bool = False,
                        distribution: str = 'uniform', logit_mean: float = 0.0,
                        logit_std: float = 1.0,
                        uniform_fraction: float = 0.0,
                        noise_prior: NoisePrior = INDEPENDENT) -> tuple[jax.Array, jax.Array]:
  """The random draws of a denoising loss: (t [B] in [0, 1) (sample_time: uniform unless
  `distribution` says otherwise), noise ~ N(0, I) shaped like x [B, ...] (N(0, Sigma) across
  frames under a correlated `noise_prior`, see noise_prior.py)), float32 (float64 for float64 x)."""
  x = jnp.asarray(x)
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  rng_t, rng_noise = jax.random.split(rng)
  t = sample_time(rng_t, x.shape[0], antithetic=antithetic, distribution=distribution,
                  logit_mean=logit_mean, logit_std=logit_std, uniform_fraction=uniform_fraction,
                  dtype=dtype)
  noise = noise_prior.sample(rng_noise, x.shape, dtype)
  return t, noise


def per_example_loss(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    *,
    rng: jax.Array,
    logsnr_fn: Callable[[jax.Array], jax.Array],
    parameterization: str,
    loss_weighting: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
    antithetic_time: bool = False,
    frame_weights: Optional[jax.Array] = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The loss of each example before diffusion_loss's batch mean (same arguments, same draws of t
  and noise from rng): (loss [B], denoising_terms(...))."""
  t, noise = draw_time_and_noise(rng, x, antithetic=antithetic_time)
  return per_example_loss_at(model_fn, x, t=t, noise=noise, logsnr_fn=logsnr_fn,
                             parameterization=parameterization, loss_weighting=loss_weighting,
                             frame_weights=frame_weights)


def per_example_loss_at(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    *,
    t: jax.Array,
    noise: jax.Array,
    logsnr_fn: Callable[[jax.Array], jax.Array],
    parameterization: str,
    loss_weighting: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
    frame_weights: Optional[jax.Array] = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """per_example_loss at given times t [B] and noise (shaped like x) instead of draws from an rng:
  (loss [B], denoising_terms(...)). Gradient accumulation draws for the whole batch once and
  evaluates the loss a microbatch at a time (train.make_train_step)."""
  terms = denoising_terms(model_fn, x, t=t, noise=noise, logsnr_fn=logsnr_fn,
                          parameterization=parameterization, frame_weights=frame_weights)
  per_example = terms['mse_target']  # [B]
  if loss_weighting is not None:
    weight = loss_weighting(terms['logsnr'], terms['dlogsnr_dt'])
    per_example = per_example * jnp.asarray(weight, per_example.dtype)
  if 'mse_head_x' in terms:  # A residual head's own loss (denoising_terms): trains it only.
    per_example = per_example + terms['mse_head_x']
  return per_example, terms
