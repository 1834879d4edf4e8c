"""Tests of vdm_jax.guidance (reconstruction guidance, replacement) and the block plan of
vdm_jax.tasks, with exact denoisers of Gaussian video data (no network).

Data: x ~ N(mu, Sigma) on videos [T, H, W, C] flattened to D = T H W C, Sigma = K_time (x) K_space
with K_time[i, j] = s^2 rho^|i - j| (frames coupled: a stationary AR(1) process in time) and
spatially correlated pixels. Then, with z = alpha x + sigma eps,

  E[x | z]       = mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 (z - alpha mu)   (linear in z),
  Cov(x | z)     = (sigma^2 / alpha) d E[x | z] / dz,
  x^b | x^a      ~ N(mu_b + S_ba S_aa^-1 (x^a - mu_a), S_bb - S_ba S_aa^-1 S_ab),

so the guidance formula, the projection and the conditional the samples should follow are all
closed form.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax import config_validation, diffusion, guidance, samplers, tasks
from vdm_jax.errors import UserError
from vdm_jax.schedules import CosineSchedule, alpha_sigma

T, H, W, C = 4, 2, 2, 1
D = T * H * W * C
RHO, S = 0.9, 0.5
K_TIME = S**2 * RHO ** np.abs(np.arange(T)[:, None] - np.arange(T)[None])
K_SPACE = 0.3 + 0.7 * np.eye(H * W)
SIGMA = np.kron(K_TIME, K_SPACE)  # rows in the order of [T, H, W, C] flattened (C = 1)
MU = 0.2 * np.sin(np.arange(D))
LOGSNR_FN = CosineSchedule().logsnr_fn()


def gaussian_denoiser(mu=MU, sigma=SIGMA):
  """Exact E[x | z] of x ~ N(mu, sigma) for z [B, T, H, W, C], and the consistent eps_hat."""
  lam, v = np.linalg.eigh(sigma)

  def denoise_fn(z, logsnr):
    B = z.shape[0]
    alpha, sig = alpha_sigma(logsnr[:, None])
    coef = alpha * lam / (alpha**2 * lam + sig**2)
    x = mu + (((z.reshape(B, -1) - alpha * mu) @ v) * coef) @ v.T
    x = x.reshape(z.shape)
    return x, diffusion.eps_from_x(z=z, x=x, logsnr=logsnr)

  return denoise_fn


def posterior_cov(logsnr):
  """Cov(x | z) = (Sigma^-1 + alpha^2 / sigma^2 I)^-1."""
  alpha, sig = alpha_sigma(np.float64(logsnr))
  return np.linalg.inv(np.linalg.inv(SIGMA) + alpha**2 / sig**2 * np.eye(D))


def operator_matrix(mask, factor):
  """A as a matrix [m, D]: guidance.observe applied to the basis videos."""
  basis = jnp.eye(D).reshape(D, T, H, W, C)
  return np.asarray(guidance.observe(basis, mask=mask, factor=factor)).reshape(D, -1).T


FIRST_TWO = tasks.frame_mask(T, [0, 1]).astype(np.float64)  # known frames 0, 1
POOL_ALL = np.ones((1, T, H // 2, W // 2, 1))  # every frame, 2x2 average pooling
KNOWN = np.broadcast_to(FIRST_TWO, (1, T, H, W, C)).reshape(-1) > 0


@pytest.mark.parametrize('mask, factor', [(FIRST_TWO, 1), (POOL_ALL, 2)])
def test_guidance_equals_its_closed_form_through_cfg(x64, mask, factor):
  """For a linear denoiser the guided prediction is closed form (Ho et al. 2022, eq. 7):
  x_tilde = x_hat + w_r alpha J^T A^T (y - A x_hat), J = dx_hat/dz, = x_hat + w_r (alpha^2 /
  sigma^2) Cov(x | z) A^T (y - A x_hat) for the exact denoiser; the projection is
  x + A^+ (y - A x), A^+ the matrix pseudo-inverse. The denoiser is classifier-free guidance
  (w = 2) of two exact Gaussian denoisers with different means, called once on the doubled batch:
  linear, with the Jacobian of either."""
  rng = np.random.default_rng(0)
  B, w_r, w_cfg = 3, 1.7, 2.0
  logsnr = jnp.array([-3.0, 0.5, 4.0])
  z = jnp.asarray(rng.standard_normal((B, T, H, W, C)))
  A = operator_matrix(mask, factor)
  y_flat = rng.uniform(-1, 1, (B, A.shape[0])) * (A.sum(axis=1) > 0)
  y = jnp.asarray(y_flat.reshape((B,) + (T, H // factor, W // factor, C)))
  cond, uncond = gaussian_denoiser(mu=MU), gaussian_denoiser(mu=-0.5 * MU)
  calls = []

  def cond_uncond(z2, logsnr2):
    calls.append(z2.shape[0])
    xc, _ = cond(z2[:B], logsnr2[:B])
    xu, _ = uncond(z2[B:], logsnr2[B:])
    x2 = jnp.concatenate([xc, xu])
    return x2, diffusion.eps_from_x(z=z2, x=x2, logsnr=logsnr2)

  cfg = samplers.classifier_free_guidance(cond_uncond, guidance_weight=w_cfg, clip_x=False)
  kwargs = dict(observation=y, mask=mask, factor=factor, weight=w_r, clip_x=False)

  @jax.jit
  def outputs(z, logsnr):
    x_tilde, _ = guidance.reconstruction_guidance(cfg, project_output=False, **kwargs)(z, logsnr)
    return x_tilde, *guidance.reconstruction_guidance(cfg, **kwargs)(z, logsnr), cfg(z, logsnr)[0]

  x_tilde, x_proj, eps_proj, x_cfg = outputs(z, logsnr)
  assert set(calls) == {2 * B}  # the gradient goes through the one doubled-batch call
  x_cfg = np.asarray(x_cfg).reshape(B, D)
  for b in range(B):
    alpha, sig = alpha_sigma(np.float64(logsnr[b]))
    want = x_cfg[b] + w_r * alpha**2 / sig**2 * posterior_cov(logsnr[b]) @ A.T @ (
        y_flat[b] - A @ x_cfg[b])
    np.testing.assert_allclose(np.asarray(x_tilde).reshape(B, D)[b], want, rtol=1e-9, atol=1e-12)
    projected = want + np.linalg.pinv(A) @ (y_flat[b] - A @ want)
    np.testing.assert_allclose(np.asarray(x_proj).reshape(B, D)[b], projected, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(A @ np.asarray(x_proj).reshape(B, D)[b], y_flat[b], atol=1e-12)
  # eps is recomputed: (x, eps) stay consistent with z.
  np.testing.assert_allclose(diffusion.q_sample(x_proj, logsnr=logsnr, noise=eps_proj), z,
                             rtol=1e-9, atol=1e-9)


def test_weight_one_is_the_exact_conditional_at_high_snr(x64):
  """eq. 7 with w_r = 1 is E[x^b | z, x^a] when Cov(x^a | z) ~ (sigma^2 / alpha^2) I, i.e. at high
  SNR; at low SNR it is far weaker than the exact correction Cov(x^b, x^a | z) Cov(x^a | z)^-1
  (x^a - x_hat^a) (which is why the paper uses w_r > 1)."""
  rng = np.random.default_rng(1)
  xa = rng.uniform(-1, 1, KNOWN.sum())
  y = np.zeros(D)
  y[KNOWN] = xa
  y = jnp.asarray(y.reshape(1, T, H, W, C))
  relative_errors = {}
  guided = jax.jit(guidance.reconstruction_guidance(gaussian_denoiser(), observation=y,
                                                    mask=FIRST_TWO, weight=1.0, clip_x=False))
  for logsnr in (-4.0, 0.0, 4.0, 8.0, 12.0):
    z = jnp.asarray(rng.standard_normal((1, T, H, W, C)))
    lam = jnp.array([logsnr])
    x_hat = np.asarray(gaussian_denoiser()(z, lam)[0]).reshape(D)
    x_tilde = np.asarray(guided(z, lam)[0]).reshape(D)
    cov = posterior_cov(logsnr)
    exact = x_hat[~KNOWN] + cov[np.ix_(~KNOWN, KNOWN)] @ np.linalg.solve(
        cov[np.ix_(KNOWN, KNOWN)], xa - x_hat[KNOWN])
    np.testing.assert_allclose(x_tilde[KNOWN], xa, rtol=1e-12)  # the known part imposed
    relative_errors[logsnr] = (np.linalg.norm(x_tilde[~KNOWN] - exact)
                               / np.linalg.norm(exact - x_hat[~KNOWN]))
  # Measured: 1.0, 0.97, 0.83, 0.016, 3e-4 at log-SNR -4, 0, 4, 8, 12.
  errors = list(relative_errors.values())
  assert np.all(np.diff(errors) < 0), relative_errors
  assert relative_errors[12.0] < 1e-3 and relative_errors[8.0] < 0.03, relative_errors
  assert relative_errors[-4.0] > 0.9, relative_errors


# ---------------------------------------------------------------- sampling x^b given x^a
NUM_SAMPLES = 2048
XA = np.array([0.6, 0.3, 0.8, 0.5, 0.4, 0.1, 0.7, 0.2])  # frames 0 and 1 (2 x 2 pixels each)


def conditional_moments():
  s_ab = SIGMA[np.ix_(~KNOWN, KNOWN)]
  s_aa = SIGMA[np.ix_(KNOWN, KNOWN)]
  mean = MU[~KNOWN] + s_ab @ np.linalg.solve(s_aa, XA - MU[KNOWN])
  cov = SIGMA[np.ix_(~KNOWN, ~KNOWN)] - s_ab @ np.linalg.solve(s_aa, s_ab.T)
  return mean, cov


def exact_conditional_denoiser(z, logsnr):
  """E[x | z, x^a] for z^a ~ q(z^a | x^a): x^a, and E[x^b | z^b] under x^b ~ N(mean_c, cov_c)."""
  mean_c, cov_c = conditional_moments()
  lam, v = np.linalg.eigh(cov_c)
  B = z.shape[0]
  alpha, sig = alpha_sigma(logsnr[:, None])
  zb = z.reshape(B, D)[:, ~KNOWN]
  xb = mean_c + (((zb - alpha * mean_c) @ v) * (alpha * lam / (alpha**2 * lam + sig**2))) @ v.T
  x = jnp.zeros((B, D)).at[:, KNOWN].set(jnp.asarray(XA)).at[:, ~KNOWN].set(xb).reshape(z.shape)
  return x, diffusion.eps_from_x(z=z, x=x, logsnr=logsnr)


def _conditional_samples(denoise_fn, sampler='ddim', num_steps=50, shape=(NUM_SAMPLES, T, H, W, C)):
  fn = jax.jit(functools.partial(samplers.sample, denoise_fn, shape=shape, logsnr_fn=LOGSNR_FN,
                                 num_steps=num_steps, sampler=sampler, dtype=jnp.float64,
                                 denoiser_takes_rng=True))
  return np.asarray(fn(rng=jax.random.PRNGKey(3))).reshape(shape[0], -1)


def test_reconstruction_guidance_follows_the_conditional_far_better_than_replacement(x64):
  """2048 samples of x^b given the first two frames x^a (DDIM, 50 steps, the same seed), against
  the exact p(x^b | x^a). The exact conditional denoiser shows the floor of this measurement
  (sampling noise and discretisation: measured largest error of the mean 0.004, of the covariance
  0.009). Measured: the largest error of the conditional mean is 0.100 with reconstruction
  guidance (w_r = 5) and 0.373 with replacement, whose samples stay near the unconditional mean
  (the conditional mean lies up to 0.6 from it); of the covariance 0.022 against 0.061. On the
  same data (max over the 4 unknown dims at T = 4, H = 2, W = 1, DDIM 50 steps) w_r = 0, 1, 2, 5,
  10 gave mean errors 0.29, 0.22, 0.17, 0.07, 0.15: eq. 7's weight 1 is too weak at low SNR
  (see the test above) and large weights overshoot. Stated tolerances: the mean within 0.13 and
  at least 2.5x closer than replacement's, whose error exceeds 0.2; the covariance within 0.04."""
  mean_c, cov_c = conditional_moments()
  y = np.zeros((NUM_SAMPLES, D))
  y[:, KNOWN] = XA
  y = jnp.asarray(y.reshape(NUM_SAMPLES, T, H, W, C))
  errors = {}
  for name, method, weight in [('reconstruction', 'reconstruction', 5.0),
                               ('replacement', 'replacement', 0.0), ('exact', None, None)]:
    if method is None:
      denoise_fn = lambda z, logsnr, rng: exact_conditional_denoiser(z, logsnr)
    else:
      denoise_fn = guidance.conditional_denoiser(method, gaussian_denoiser(), observation=y,
                                                 mask=FIRST_TWO, weight=weight, clip_x=False)
    x = _conditional_samples(denoise_fn)
    np.testing.assert_allclose(x[:, KNOWN], np.broadcast_to(XA, (NUM_SAMPLES, KNOWN.sum())),
                               rtol=1e-12)  # the known frames come out as observed
    xb = x[:, ~KNOWN]
    errors[name] = (np.abs(xb.mean(axis=0) - mean_c).max(), np.abs(np.cov(xb.T) - cov_c).max())
  assert errors['exact'][0] < 0.03 and errors['exact'][1] < 0.02, errors
  assert errors['reconstruction'][0] < 0.13, errors
  assert errors['replacement'][0] > 0.2, errors
  assert errors['reconstruction'][0] < errors['replacement'][0] / 2.5, errors
  assert errors['reconstruction'][1] < 0.04, errors


@pytest.mark.parametrize('sampler, mask, factor', [
    ('ancestral', FIRST_TWO, 1), ('pc', FIRST_TWO, 1), ('dpmpp_2m', POOL_ALL, 2),
    ('heun', POOL_ALL, 2)])  # ddim: in the test above
def test_every_sampler_meets_the_observation(x64, sampler, mask, factor):
  """Reconstruction guidance with every sampler: the result meets the observation exactly (known
  frames, or the 2x2 block means of super-resolution) and is finite and in [-1, 1] (the clip
  after guidance; the known frames are observed values in [-1, 1])."""
  shape = (8, T, H, W, C)
  rng = np.random.default_rng(2)
  y = jnp.asarray(rng.uniform(-1, 1, (8, T, H // factor, W // factor, C)) * mask)
  denoise_fn = guidance.conditional_denoiser('reconstruction', gaussian_denoiser(), observation=y,
                                             mask=mask, factor=factor, weight=5.0)
  x = _conditional_samples(denoise_fn, sampler=sampler, num_steps=6, shape=shape).reshape(shape)
  np.testing.assert_allclose(guidance.observe(x, mask=mask, factor=factor), y, rtol=1e-12,
                             atol=1e-15)
  assert np.all(np.isfinite(x))
  if factor == 1:
    assert np.all(np.abs(x) <= 1.0)


def test_super_resolution_guidance_through_the_downsampler(x64):
  """The paper's super-resolution formula as written (no projection): guidance through the 2x2
  average pool brings the samples' block means to the low-resolution video y (measured RMS of
  pool(x) - y: 0.008 with w_r = 5), against 0.49 for independent draws of the data (what an
  unguided sampler gives). Stated: below 0.03, and above 0.3 unguided. With the projection (the default) they are exact, as in the tests
  above."""
  shape = (256, T, H, W, C)
  rng = np.random.default_rng(4)
  truth = MU + rng.standard_normal((2 * shape[0], D)) @ np.linalg.cholesky(SIGMA).T
  y, other = guidance.downsample(jnp.asarray(truth.reshape(2 * shape[0], *shape[1:])),
                                 factor=2).reshape(2, shape[0], T, H // 2, W // 2, C)
  guided = guidance.reconstruction_guidance(gaussian_denoiser(), observation=y, mask=POOL_ALL,
                                            factor=2, weight=5.0, clip_x=False,
                                            project_output=False)
  x = _conditional_samples(lambda z, logsnr, rng: guided(z, logsnr), num_steps=25,
                           shape=shape).reshape(shape)
  rms = lambda a: float(np.sqrt(np.mean(np.square(a))))
  guided_rms, unguided_rms = rms(guidance.downsample(x, factor=2) - y), rms(other - y)
  assert guided_rms < 0.03 and unguided_rms > 0.3, (guided_rms, unguided_rms)


def test_block_plan():
  assert tasks.block_plan(total_frames=64, block_frames=16, num_known=4) == [
      (0, 0), (12, 4), (24, 4), (36, 4), (48, 4)]
  # The last block moves back to end at the total (it then carries more known frames).
  assert tasks.block_plan(total_frames=20, block_frames=16, num_known=4) == [(0, 0), (4, 12)]
  assert tasks.block_plan(total_frames=16, block_frames=16, num_known=8) == [(0, 0)]
  # Each of P prompts describes L / P frames; a block gets the one where its new frames' middle is.
  plan = tasks.block_plan(total_frames=64, block_frames=16, num_known=4)
  assert tasks.block_prompts('abcd', plan, 64, 16) == ['a', 'b', 'c', 'c', 'd']  # middles 7.5, 21.5, ...
  plan = tasks.block_plan(total_frames=64, block_frames=16, num_known=1)
  assert plan == [(0, 0), (15, 1), (30, 1), (45, 1), (48, 13)]
  assert tasks.block_prompts('abcd', plan, 64, 16) == ['a', 'b', 'c', 'd', 'd']
  assert tasks.block_prompts('ab', [(0, 0)], 16, 16) == ['a']
  with pytest.raises(ValueError, match='num_known'):
    tasks.block_plan(total_frames=32, block_frames=16, num_known=16)


def test_extension_is_continuous_at_block_boundaries(x64):
  """A 10-frame video from 4-frame blocks, each conditioned on the last 2 frames of the one before
  (tasks.extend_video), with the exact denoiser of 4-frame stationary AR(1) data (every frame's
  mean the same): if each block follows p(x^b | x^a), the stitched video is the same AR(1)
  process, and consecutive frames correlate with rho = 0.9 at block boundaries as within blocks.
  Measured with 2048 videos and w_r = 5: 0.904-0.919 at every step, boundaries included (within
  blocks DDIM's 25 steps slightly under-disperse); with replacement instead, the same steps within
  blocks but 0.50-0.59 across boundaries (a jump). Stated: within 0.03 of rho everywhere, and
  boundary correlations within 0.02 of the first block's."""
  shape = (2048, T, H, W, C)
  frame_mean = np.tile(0.2 * np.sin(np.arange(H * W * C)), T)
  plan = tasks.block_plan(total_frames=10, block_frames=T, num_known=2)
  boundaries = [start + known - 1 for start, known in plan[1:]]  # frame t -> t + 1 crosses
  assert boundaries == [3, 5, 7]

  @jax.jit
  def block(observation, mask, rng):
    denoise_fn = guidance.conditional_denoiser(
        'reconstruction', gaussian_denoiser(mu=frame_mean), observation=observation, mask=mask,
        weight=5.0, clip_x=False)
    return samplers.sample(denoise_fn, rng=rng, shape=shape, logsnr_fn=LOGSNR_FN, num_steps=25,
                           sampler='ddim', dtype=jnp.float64, denoiser_takes_rng=True)

  video = tasks.extend_video(
      lambda obs, mask, i: block(jnp.asarray(obs, jnp.float64), jnp.asarray(mask, jnp.float64),
                                 jax.random.PRNGKey(i)),
      num_videos=shape[0], video_shape=shape[1:], total_frames=10, num_known=2)
  assert video.shape == (shape[0], 10, H, W, C)
  v = video.reshape(shape[0], 10, H * W * C) - frame_mean[:H * W * C]
  correlation = np.array([
      np.mean(np.sum(v[:, t] * v[:, t + 1], axis=0)
              / np.sqrt(np.sum(v[:, t]**2, axis=0) * np.sum(v[:, t + 1]**2, axis=0)))
      for t in range(9)])
  np.testing.assert_allclose(correlation, RHO, atol=0.03)
  # Each block's frames carry over exactly (float32 storage of the long video).
  np.testing.assert_allclose(correlation[boundaries], correlation[[0, 1, 2]], atol=0.02)


def test_task_fields_are_validated():
  sample = lambda **kw: __import__('ml_collections').ConfigDict(dict(
      dict(task='predict', reconstruction_weight=5.0, num_clips=4, num_known_frames=4,
           extend_frames=64, super_resolution_factor=2, inpaint_fraction=0.5), **kw))
  config_validation.validate_task(sample(), frames=16, height=32)
  for bad, field in [(dict(num_known_frames=16), 'num_known_frames'),
                     (dict(task='extend', extend_frames=8), 'extend_frames'),
                     (dict(task='super_resolve', super_resolution_factor=3), 'super_resolution_factor'),
                     (dict(task='inpaint', inpaint_fraction=1.0), 'inpaint_fraction'),
                     (dict(reconstruction_weight=-1.0), 'reconstruction_weight'),
                     (dict(num_clips=0), 'num_clips')]:
    with pytest.raises(UserError, match=f'config.sample.{field}'):
      config_validation.validate_task(sample(**bad), frames=16, height=32)
  with pytest.raises(ValueError, match="'reconstruction', 'replacement'"):
    guidance.check_conditioning_method('inverse')
  with pytest.raises(ValueError, match="'generate', 'predict'"):
    tasks.check_task('colorize')


def test_task_observations_and_scores():
  """Each task's observation is A(truth) for its operator (first frames, every other frame, 2x2
  block means, all but a centre square), and the scores have their closed forms: PSNR
  10 log10(255^2 / MSE) over the unknown entries only, SSIM 1 for identical videos."""
  from vdm_jax.metrics import reconstruction  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  truth = rng.integers(0, 256, (2, 4, 8, 8, 3)).astype(np.uint8)
  x = truth.astype(np.float32) / 127.5 - 1
  predict = tasks.task_conditioning('predict', x, num_known_frames=1)
  np.testing.assert_allclose(predict.observation[:, 0], x[:, 0])
  assert np.all(predict.observation[:, 1:] == 0) and predict.factor == 1
  interpolate = tasks.task_conditioning('interpolate', x)
  np.testing.assert_array_equal(interpolate.mask.reshape(-1), [1, 0, 1, 0])
  sr = tasks.task_conditioning('super_resolve', x, super_resolution_factor=2)
  np.testing.assert_allclose(sr.observation[0, 0, 0, 0], x[0, 0, :2, :2].mean(axis=(0, 1)),
                             rtol=1e-6)
  inpaint = tasks.task_conditioning('inpaint', x, inpaint_fraction=0.5)
  assert inpaint.mask[0, 0, :, :, 0].sum() == 64 - 16 and inpaint.mask[0, 0, 3, 3, 0] == 0
  shown = tasks.conditioning_picture(predict, video_shape=x.shape[1:])
  np.testing.assert_array_equal(shown[:, 0], truth[:, 0])
  assert np.all(shown[:, 1:] == 128)  # unobserved: mid-grey
  # PSNR over the unknown frames only: an error of 10 there, none in the given frame.
  generated = truth.astype(np.int32)
  generated[:, 1:] = np.clip(generated[:, 1:] + 10, 0, 255)
  generated[:, 1:] = np.where(truth[:, 1:] > 245, truth[:, 1:] - 10, generated[:, 1:])
  scores = tasks.score(generated.astype(np.uint8), truth, predict, dataset='moving_digits')
  np.testing.assert_allclose(scores['psnr'], 10 * np.log10(255**2 / 100), rtol=1e-9)
  np.testing.assert_allclose(reconstruction.ssim(truth, truth), 1.0, rtol=1e-12)
  assert np.all(np.array(scores['ssim']) < 1) and np.all(np.isinf(reconstruction.psnr(truth, truth)))


def test_trajectory_error_of_a_shifted_video():
  """The tracker's trajectory error of a rendered moving_shapes video against itself shifted 3
  pixels down (np.roll over the black background, the object kept inside) is 3 pixels on every
  frame, with every position found; a black video finds none."""
  from vdm_jax.data import moving_shapes  # pylint: disable=g-import-not-at-top
  from vdm_jax.metrics import reconstruction  # pylint: disable=g-import-not-at-top
  video = None
  for seed in range(20):  # an object that stays 3 px clear of the bottom edge
    video, _, objects = moving_shapes.render_video(np.random.default_rng(seed))
    if objects[0]['centers'][:, 1].max() + objects[0]['size'] / 2 < 28:
      break
  shifted = np.roll(video, 3, axis=1)
  error, found = reconstruction.trajectory_error(np.stack([shifted, np.zeros_like(video)]),
                                                 np.stack([video, video]), frames=np.arange(8, 16))
  np.testing.assert_allclose(error[0], 3.0, atol=1e-9)
  assert found[0] == 1.0 and found[1] == 0.0 and np.isnan(error[1])


@pytest.mark.parametrize('factor', [2, 4])
def test_task_factor_is_the_pooling_of_each_tasks_observation(factor):
  """tasks.task_factor, which the callers of make_conditional_generate_fn pass as its factor
  (the benchmark once left it at 1 and failed on super_resolve), agrees with the observation
  task_conditioning makes, for every test-clip task."""
  from experiments import moving_shapes  # pylint: disable=g-import-not-at-top
  config = moving_shapes.get_config()
  config.sample.super_resolution_factor = factor
  x = np.zeros((1, 4, 8, 8, 3), np.float32)
  for task in tasks.TEST_CLIP_TASKS:
    conditioning = tasks.task_conditioning(task, x, num_known_frames=1,
                                           super_resolution_factor=factor)
    assert tasks.task_factor(task, config) == conditioning.factor, task
    assert conditioning.observation.shape[2] == 8 // conditioning.factor, task
  assert tasks.task_factor('super_resolve', config) == factor


def test_no_model_baselines_of_the_conditional_benchmark():
  """benchmarks/conditional.py's baselines: linear interpolation in time is exact where pixel
  values change linearly over frames (and copies the last frame when it has one neighbour), and
  is wrong by half the object's brightness for a moving object; the held frame is exact for a
  still clip only."""
  from benchmarks import conditional  # pylint: disable=g-import-not-at-top
  T = 7
  ramp = np.broadcast_to((10 * np.arange(T, dtype=np.uint8))[None, :, None, None, None], (2, T, 4, 4, 3))
  out = conditional.linear_interpolation_baseline(ramp)
  np.testing.assert_array_equal(out[:, :6], ramp[:, :6])
  np.testing.assert_array_equal(out[:, 6], ramp[:, 6])  # Frame 6 is given (even).
  eight = conditional.linear_interpolation_baseline(np.broadcast_to(
      (10 * np.arange(8, dtype=np.uint8))[None, :, None, None, None], (1, 8, 4, 4, 3)))
  np.testing.assert_array_equal(eight[0, 7], np.full((4, 4, 3), 60))  # A copy of frame 6.
  moving = np.zeros((1, 3, 1, 3, 3), np.uint8)
  for t in range(3):
    moving[0, t, 0, t] = 200  # A one-pixel object moving right by a pixel per frame.
  middle = conditional.linear_interpolation_baseline(moving)[0, 1, 0, :, 0]
  np.testing.assert_array_equal(middle, [100, 0, 100])  # Two half-bright copies, none where it is.
  held = conditional.last_frame_baseline(moving, 1)
  assert (held[0, 1:] == moving[0, :1]).all() and not (held == moving).all()


def test_boundary_report_finds_a_jump_just_after_a_block_boundary():
  """A red square moving right 1 px a frame whose block 2 continues its given frames for two
  frames, then jumps 4 px: the step into the first new frame looks smooth (1 px), the window
  after the boundary catches the jump (5 px), and the directions are compared with the prompts."""
  T, side = 24, 5
  video = np.zeros((T, 32, 32, 3), np.uint8)
  for t in range(T):
    x = t + (4 if t >= 17 else 0)
    video[t, 12:12 + side, x:x + side, 0] = 255
  plan = tasks.block_plan(total_frames=T, block_frames=16, num_known=8)
  assert plan == [(0, 0), (8, 8)]  # one boundary: frame 15 -> 16
  report = tasks.boundary_report(video, plan=plan, block_frames=16,
                                 prompts=['a red square moving right', 'a red square moving left'])
  assert report['object_found']
  np.testing.assert_allclose(report['boundary_step_px'], [1.0], atol=1e-6)
  np.testing.assert_allclose(report['max_step_after_boundary_px'], [5.0], atol=1e-6)
  assert report['median_step_px'] == pytest.approx(1.0)
  assert report['block_directions'] == ['right', 'right']
  assert report['blocks_following_prompt'] == 0.5


def test_jumps_are_counted_across_frames_where_the_object_is_lost():
  """A red square moving right 1 px a frame, lost in frames 5-7 and drawn again where it would be
  (no jump), then lost in frames 12-13 and drawn 12 px back (one jump), and an 8 px step into
  frame 20 (one more). Frames where it is lost are reported."""
  T, side = 24, 5
  video = np.zeros((T, 32, 32, 3), np.uint8)
  for t in range(T):
    if t in (5, 6, 7, 12, 13):
      continue
    x = t + 4 - (15 if t >= 14 else 0) + (7 if t >= 20 else 0)
    video[t, 12:12 + side, x:x + side, 0] = 255
  plan = tasks.block_plan(total_frames=T, block_frames=16, num_known=8)
  report = tasks.boundary_report(video, plan=plan, block_frames=16,
                                 prompts=['a red square moving right'] * 2)
  assert report['frames_with_object'] == pytest.approx(19 / 24)
  assert report['jumps'] == 2
  centroids = np.stack([np.arange(6.0), np.zeros(6)], 1)
  assert tasks.count_jumps(centroids) == 0
  centroids[3:, 0] += 5.5  # 6.5 px in one frame
  assert tasks.count_jumps(centroids) == 1
  centroids[2] = np.nan  # 7.5 px across one lost frame: up to 5 + 2.83 px allowed
  assert tasks.count_jumps(centroids) == 0
  assert tasks.count_jumps(centroids, scale=0.5) == 1  # half the resolution: half the allowance


def test_block_direction_is_tracked_over_the_blocks_new_frames():
  """A red square moving right, then down from frame 16: block 2 carries 8 frames of the rightward
  motion, so over all its frames it would read as a diagonal; over its own (new) frames it moves
  down, as its prompt asks."""
  T, side = 24, 5
  video = np.zeros((T, 32, 32, 3), np.uint8)
  for t in range(T):
    x, y = min(t, 15), 5 + max(t - 15, 0)
    video[t, y:y + side, x:x + side, 0] = 255
  plan = tasks.block_plan(total_frames=T, block_frames=16, num_known=8)
  report = tasks.boundary_report(video, plan=plan, block_frames=16,
                                 prompts=['a red square moving right', 'a red square moving down'])
  assert report['block_directions'] == ['right', 'down']
  assert report['blocks_following_prompt'] == 1.0
  from vdm_jax.data import tracker  # pylint: disable=g-import-not-at-top
  assert tracker.track_video(video[8:24])[0]['direction'] != 'down'  # what the whole block reads


# ============================================================================ frame-conditioned models


def frame_conditioned_config(cond_frames='first', num_cond_frames=1, cond_drop_prob=0.0, **sample):
  """The base config with a frame-conditioned model on 16 frames of 8x8x1 (no dataset read)."""
  from experiments import base  # pylint: disable=g-import-not-at-top
  config = base.get_base_config()
  config.model.frame_conditioning = True
  config.model.conditioning = 'none'
  config.diffusion.parameterization = 'x'
  config.train.cond_frames = cond_frames
  config.train.num_cond_frames = num_cond_frames
  config.train.cond_drop_prob = cond_drop_prob
  config.sample.update(sample)
  return config


def test_network_given_frames_are_those_the_model_was_trained_on():
  """Each kind of frame-conditioned model gets, of a task's observation, exactly the frames it was
  trained to be given; what it cannot take is refused, or (trained with dropped frames) given
  none."""
  shape = (16, 8, 8, 1)
  predict4, _ = tasks.task_mask('predict', shape, num_known_frames=4)
  every_other, _ = tasks.task_mask('interpolate', shape)
  inpaint, _ = tasks.task_mask('inpaint', shape)
  pooled, factor = tasks.task_mask('super_resolve', shape, super_resolution_factor=2)
  given = lambda config, mask, f=1: np.flatnonzero(tasks.network_given_frames(config, mask, f))

  first = frame_conditioned_config('first', 1)
  np.testing.assert_array_equal(given(first, predict4), [0])  # frames 1-3: the method's job
  np.testing.assert_array_equal(given(first, every_other), [0])
  with pytest.raises(ValueError, match=r'first 1 frame\(s\).*gives whole frames \[\]'):
    tasks.network_given_frames(first, inpaint, 1)
  with pytest.raises(ValueError, match='not a pooled clip'):
    tasks.network_given_frames(first, pooled, factor)
  dropped = frame_conditioned_config('first', 4, cond_drop_prob=0.25)
  assert given(dropped, tasks.frame_mask(16, range(2))).size == 0  # not all 4: none, from noise
  np.testing.assert_array_equal(given(dropped, predict4), [0, 1, 2, 3])

  random = frame_conditioned_config('random', 4)
  np.testing.assert_array_equal(given(random, every_other), np.arange(0, 16, 2))
  np.testing.assert_array_equal(given(random, predict4), [0, 1, 2, 3])
  with pytest.raises(ValueError, match='at least one whole frame'):
    tasks.network_given_frames(random, inpaint, 1)

  temporal = frame_conditioned_config('low_frame_rate')
  np.testing.assert_array_equal(given(temporal, every_other), np.arange(0, 16, 2))
  with pytest.raises(ValueError, match='frames 0, 2, ...'):
    tasks.network_given_frames(temporal, predict4, 1)

  spatial = frame_conditioned_config('low_res')
  np.testing.assert_array_equal(given(spatial, pooled, factor), np.arange(16))
  with pytest.raises(ValueError, match='super_resolution_factor=2'):
    tasks.network_given_frames(spatial, predict4, 1)


def test_tasks_a_frame_conditioned_model_cannot_take_are_refused_with_the_fix():
  shape = (16, 8, 8, 1)
  config = frame_conditioned_config('first', 1, task='extend')
  with pytest.raises(UserError, match=r"config.sample.task='extend'.*cond_drop_prob > 0"):
    tasks.check_frame_conditioned_task(config, 'extend', shape)
  config.train.cond_drop_prob = 0.25  # the story's first block from the prompt alone
  tasks.check_frame_conditioned_task(config, 'extend', shape)
  config = frame_conditioned_config('first', 2, num_known_frames=1)
  with pytest.raises(UserError, match='num_known_frames >= 2'):
    tasks.check_frame_conditioned_task(config, 'predict', shape)
  with pytest.raises(UserError, match=r"config.eval.task='inpaint'.*'random'"):
    tasks.check_frame_conditioned_task(config, 'inpaint', shape, field='eval.task')


class _GivenFramesPosterior:
  """A frame-conditioned 'network' (no parameters) that reads only its given frames: for static
  videos (every frame the same v ~ N(0, I)) it predicts the exact E[v | given frames], each given
  frame c_t = alpha' v + sigma' eps_t at the augmentation level: alpha' sum_t m_t c_t /
  (alpha'^2 sum_t m_t + sigma'^2), the same for every frame (x-parameterization)."""

  def apply(self, variables, z, *, logsnr, cond_frames, cond_mask, cond_logsnr, drop_text):
    del variables, logsnr, drop_text
    alpha, sigma = alpha_sigma(cond_logsnr)
    alpha, sigma = alpha[:, None, None, None], sigma[:, None, None, None]
    m = cond_mask.astype(z.dtype)[:, :, None, None, None]
    mean = alpha * (m * cond_frames).sum(1) / (alpha**2 * m.sum(1) + sigma**2)
    return jnp.broadcast_to(mean[:, None], z.shape)


@pytest.mark.parametrize('cond_frames, expected', [('first', 'frame 0'), ('random', 'frames 0-3')])
def test_a_frame_conditioned_model_is_given_its_frames_by_the_task(cond_frames, expected):
  """Prediction with 4 frames given (frame 0 = a, frames 1-3 = b): a model trained given the first
  frame reads a alone and continues with a; one trained given any frames reads all four and
  continues with their mean (a + 3 b) / 4. The known frames come out as given either way."""
  from vdm_jax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config = frame_conditioned_config(cond_frames, 1, conditioning_method='replacement',
                                    batch_size=2, num_steps=8, sampler='ddim', cond_aug_logsnr=10.0)
  shape = (16, 8, 8, 1)
  rng = np.random.default_rng(0)
  a, b = rng.uniform(-0.8, 0.8, (2, 2, 1, 8, 8, 1))
  videos = np.concatenate([a, np.repeat(b, 15, axis=1)], axis=1)
  conditioning = tasks.task_conditioning('predict', videos, num_known_frames=4)
  generate = tasks.make_conditional_generate_fn(
      _GivenFramesPosterior(), logsnr_fn=LOGSNR_FN, config=config, video_shape=shape,
      mesh=mesh_lib.make_mesh(config), factor=1)
  out = generate({}, ['', ''], conditioning.observation, conditioning.mask, jax.random.PRNGKey(0))
  np.testing.assert_allclose(out[:, :4], videos[:, :4], atol=1e-5)
  want = a if expected == 'frame 0' else (a + 3 * b) / 4
  np.testing.assert_allclose(out[:, 4:], np.broadcast_to(want, out[:, 4:].shape), atol=0.03)


class _ConstantPrior:
  """A 'network' without frame conditioning (no cond_frames input: a call with one fails) that
  predicts x = 0.3 everywhere: a high-noise expert above a frame-conditioned model."""

  def conditioning_inputs(self):
    return ()

  def apply(self, variables, z, *, logsnr, drop_text):
    del variables, logsnr, drop_text
    return jnp.full_like(z, 0.3)


def test_an_expert_without_frame_conditioning_serves_a_frame_conditioned_model():
  """The expert is called without the main model's frame inputs; taking every step (level +inf)
  its prediction is the output's new frames, and below a level inside the grid the main model
  takes the last steps, so its continuation is (its prediction ignores z). The known frames come
  out as given either way."""
  from vdm_jax import experts, mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config = frame_conditioned_config('first', 1, conditioning_method='replacement',
                                    batch_size=2, num_steps=8, sampler='ddim', cond_aug_logsnr=10.0)
  expert_config = frame_conditioned_config(conditioning_method='replacement', batch_size=2)
  expert_config.model.frame_conditioning = False
  shape = (16, 8, 8, 1)
  a, b = np.random.default_rng(1).uniform(-0.8, 0.8, (2, 2, 1, 8, 8, 1))
  videos = np.concatenate([a, np.repeat(b, 15, axis=1)], axis=1)
  conditioning = tasks.task_conditioning('predict', videos, num_known_frames=4)
  for below, want in [(np.inf, 0.3), (0.0, a)]:
    expert = experts.Expert(model=_ConstantPrior(), config=expert_config, params={},
                            logsnr_below=below, step=1, workdir='expert')
    generate = tasks.make_conditional_generate_fn(
        _GivenFramesPosterior(), logsnr_fn=LOGSNR_FN, config=config, video_shape=shape,
        mesh=mesh_lib.make_mesh(config), factor=1, expert=expert)
    out = generate({}, ['', ''], conditioning.observation, conditioning.mask,
                   jax.random.PRNGKey(0))
    np.testing.assert_allclose(out[:, :4], videos[:, :4], atol=1e-5)
    np.testing.assert_allclose(out[:, 4:], np.broadcast_to(want, out[:, 4:].shape), atol=0.03)


def test_a_frame_conditioned_expert_needs_a_main_model_given_the_same_frames():
  from vdm_jax import experts  # pylint: disable=g-import-not-at-top
  config = frame_conditioned_config('first', 1, cond_drop_prob=0.25)
  saved = config.to_dict()
  experts.check_compatible(config, saved, 'w')  # the same frames: accepted
  unconditioned = frame_conditioned_config()
  unconditioned.model.frame_conditioning = False
  experts.check_compatible(config, unconditioned.to_dict(), 'w')  # no frames: accepted
  with pytest.raises(UserError, match="expert_workdir='w' is frame-conditioned .* but this run "
                                      'is not'):
    experts.check_compatible(unconditioned, saved, 'w')
  for field, value in [('num_cond_frames', 4), ('cond_drop_prob', 0.0), ('cond_frames', 'random')]:
    other = frame_conditioned_config('first', 1, cond_drop_prob=0.25)
    other.train[field] = value
    with pytest.raises(UserError, match=f'was trained with config.train.{field}='
                                        f'{value!r} but this run has'):
      experts.check_compatible(config, other.to_dict(), 'w')
