"""Tests of vdm_jax.likelihood: the VDM bound against the exact NLL of Gaussian data, and each term
against its formula written out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax import likelihood

MU, S = 0.3, 0.5  # data x ~ N(MU, S^2 I)


def _exact_denoiser(z, logsnr):
  """E[x | z] for x ~ N(MU, S^2 I): MU + k (z - alpha MU), k = alpha S^2 / (alpha^2 S^2 + sigma^2)."""
  alpha2 = jax.nn.sigmoid(logsnr)[:, None]
  alpha = jnp.sqrt(alpha2)
  return MU + alpha * S**2 / (alpha2 * S**2 + (1.0 - alpha2)) * (z - alpha * MU)


def _expected_vlb(x, logsnr_min, logsnr_max):
  """E over t and noise of the VLB of each example x [B, D] (Gaussian decoder), in closed form.

  Per element, with r = exp(lambda), u = 1 + r S^2, x - x_hat = (x - MU) / u - k sigma eps, so
  1/2 exp(lambda) E||x - x_hat||^2 dlambda = 1/2 ((x - MU)^2 / u^2 + r S^4 / u^2) dr, whose integral
  over [r_1, r_0] is 1/2 ((x - MU)^2 / S^2 (1/u_1 - 1/u_0) + log(u_0 / u_1) + 1/u_0 - 1/u_1).
  """
  r0, r1 = math.exp(logsnr_max), math.exp(logsnr_min)
  u0, u1 = 1.0 + r0 * S**2, 1.0 + r1 * S**2
  a1 = r1 / (1.0 + r1)  # alpha_1^2
  prior = 0.5 * (a1 * x**2 - a1 + math.log(1.0 + r1))
  diffusion = 0.5 * ((x - MU)**2 / S**2 * (1 / u1 - 1 / u0) + math.log(u0 / u1) + 1 / u0 - 1 / u1)
  reconstruction = 0.5 * (math.log(2 * math.pi) - logsnr_max + 1.0)
  return np.sum(prior + diffusion + reconstruction, axis=1)


def _exact_nll(x):
  return np.sum(0.5 * (x - MU)**2 / S**2 + 0.5 * math.log(2 * math.pi * S**2), axis=1)


def test_vlb_of_exact_denoiser_tightens_to_the_exact_nll(x64):
  """VLB >= NLL, and -> NLL as [logsnr_min, logsnr_max] widens; per dimension (nats), estimated
  with 2M (t, noise) draws (64 examples x 256 dimensions x 128 antithetic t)."""
  B, D = 64, 256
  x = MU + S * np.random.default_rng(0).standard_normal((B, D))
  nll = _exact_nll(x)

  @jax.jit
  def vlb(x, logsnr_min, logsnr_max):
    # Linear in lambda: dlambda/dt is constant, the Monte Carlo integrand smooth.
    logsnr_fn = lambda t: logsnr_max + (logsnr_min - logsnr_max) * t
    return likelihood.vlb(_exact_denoiser, x, rng=jax.random.PRNGKey(1), logsnr_fn=logsnr_fn,
                          parameterization='x', num_t=128, decoder='gaussian')

  gaps = []
  for logsnr_min, logsnr_max in [(-3.0, 3.0), (-6.0, 7.0), (-12.0, 14.0)]:
    terms = vlb(jnp.asarray(x), logsnr_min, logsnr_max)
    total = np.asarray(terms['total'])
    expected = _expected_vlb(x, logsnr_min, logsnr_max)
    # The estimate is unbiased: per example it differs from its expectation by noise only.
    diff = total - expected
    se = diff.std() / math.sqrt(B) / D
    assert abs(diff.mean() / D) < 4 * se, (logsnr_min, logsnr_max, diff.mean() / D, se)
    gap = np.mean(total - nll) / D
    assert gap > -4 * se  # a bound: above the exact NLL, up to Monte Carlo error
    gaps.append((np.mean(expected - nll) / D, gap, se))
    np.testing.assert_allclose(terms['bpd'], total / (D * math.log(2)), rtol=1e-12)
  # Any schedule with the same endpoints gives the same bound (VDM, sec. 5): through the cosine
  # schedule's own t (uniform_logsnr=False) the estimate still matches the closed form.
  from vdm_jax.schedules import CosineSchedule  # pylint: disable=g-import-not-at-top
  cosine = jax.jit(lambda x: likelihood.vlb(
      _exact_denoiser, x, rng=jax.random.PRNGKey(2), logsnr_fn=CosineSchedule(-6.0, 7.0).logsnr_fn(),
      parameterization='x', num_t=128, decoder='gaussian', uniform_logsnr=False))(jnp.asarray(x))
  diff = np.asarray(cosine['total']) - _expected_vlb(x, -6.0, 7.0)
  assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(B), (diff.mean(), diff.std())
  exact_gaps = [g[0] for g in gaps]
  assert exact_gaps[0] > exact_gaps[1] > exact_gaps[2] > 0  # the bound tightens
  assert exact_gaps[2] < 1e-5  # nats per dimension at lambda in [-12, 14]
  # Measured: estimated gap 0.088 +- 0.0065 nats/dim at [-3, 3] (exact 0.094), ~0 at [-12, 14].
  assert gaps[0][1] > 0.06
  gap, se = gaps[2][1], gaps[2][2]
  assert abs(gap) < 4 * se and se < 0.02, gaps


def test_decoder_logsnr_is_the_bound_of_the_chain_that_stops_there(x64):
  """decoder_logsnr = 7 on a schedule from 14 to -6 is the bound of the schedule from 7 to -6 (the
  same estimate from the same draws, and its closed form); on 8-bit data with a denoiser whose x
  error e is tiny but not zero, stopping at log-SNR 13 beats the full chain to 20, whose diffusion
  term pays ~e^2 / 2 (e^20 - e^13) per element more."""
  B, D = 64, 256
  x = jnp.asarray(MU + S * np.random.default_rng(0).standard_normal((B, D)))
  line = lambda top: (lambda t: top + (-6.0 - top) * t)
  kw = dict(rng=jax.random.PRNGKey(1), parameterization='x', num_t=128, decoder='gaussian')
  capped = likelihood.vlb(_exact_denoiser, x, logsnr_fn=line(14.0), decoder_logsnr=7.0, **kw)
  short = likelihood.vlb(_exact_denoiser, x, logsnr_fn=line(7.0), **kw)
  for k in ('prior', 'diffusion', 'reconstruction', 'total'):
    np.testing.assert_allclose(capped[k], short[k], rtol=1e-12)
  full = likelihood.vlb(_exact_denoiser, x, logsnr_fn=line(14.0), **kw)
  assert np.mean(full['total']) < np.mean(capped['total'])  # The exact denoiser: longer is tighter.
  diff = np.asarray(capped['total']) - _expected_vlb(np.asarray(x), -6.0, 7.0)
  assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(B)
  with pytest.raises(ValueError, match='uniform_logsnr'):
    likelihood.vlb(_exact_denoiser, x, logsnr_fn=line(14.0), decoder_logsnr=7.0,
                   uniform_logsnr=False, **kw)

  pixels = np.asarray(likelihood.pixel_values())
  data = jnp.asarray(pixels[np.random.default_rng(1).integers(0, 256, (8, 64))])
  error = 1e-4  # A twentieth of the grid's half spacing (1 / 255).
  near_exact = lambda z, logsnr: data + error
  kw = dict(rng=jax.random.PRNGKey(2), parameterization='x', num_t=256, decoder='discrete')
  to_20 = likelihood.vlb(near_exact, data, logsnr_fn=line(20.0), **kw)
  to_13 = likelihood.vlb(near_exact, data, logsnr_fn=line(20.0), decoder_logsnr=13.0, **kw)
  expected = 0.5 * error**2 * (math.exp(20.0) - math.exp(-6.0)) * 64
  # Monte Carlo over lambda of an integrand ~exp(lambda): stratified, 256 x 8 draws, within 10%.
  np.testing.assert_allclose(np.mean(to_20['diffusion']), expected, rtol=0.1)
  # At 13, sigma / alpha = 0.0015 against the grid's half spacing 0.0039: the decoder is ~exact.
  assert np.mean(to_13['bpd']) < 0.05 * np.mean(to_20['bpd']), (to_13['bpd'], to_20['bpd'])


def test_prior_kl_is_the_gaussian_kl(x64):
  x = np.random.default_rng(2).uniform(-1, 1, (3, 2, 4, 4, 3))
  logsnr_1 = -3.0
  alpha2 = 1 / (1 + math.exp(-logsnr_1))
  mean, var = math.sqrt(alpha2) * x, 1 - alpha2
  kl = 0.5 * (mean**2 + var - 1.0 - math.log(var))  # KL(N(mean, var) || N(0, 1)) per element
  np.testing.assert_allclose(likelihood.prior_kl(jnp.asarray(x), logsnr_1=logsnr_1),
                             kl.sum(axis=(1, 2, 3, 4)), rtol=1e-12)


def test_gaussian_reconstruction_is_the_gaussian_log_density(x64):
  gen = np.random.default_rng(3)
  x, noise = gen.uniform(-1, 1, (2, 5, 3)), gen.standard_normal((2, 5, 3))
  logsnr_0 = 6.0
  alpha, sigma = math.sqrt(1 / (1 + math.exp(-logsnr_0))), math.sqrt(1 / (1 + math.exp(logsnr_0)))
  z = alpha * x + sigma * noise
  var = (sigma / alpha)**2
  nll = 0.5 * math.log(2 * math.pi * var) + (x - z / alpha)**2 / (2 * var)
  got = likelihood.reconstruction_gaussian(jnp.asarray(x), logsnr_0=logsnr_0, noise=jnp.asarray(noise))
  np.testing.assert_allclose(got, nll.sum(axis=(1, 2)), rtol=1e-10)


@pytest.mark.parametrize('logsnr_0', [4.0, 9.0, 20.0])
def test_discrete_reconstruction_is_the_categorical_decoder(x64, logsnr_0):
  gen = np.random.default_rng(4)
  k = gen.integers(0, 256, (2, 3, 2))
  x = (2.0 * k - 255.0) / 255.0
  noise = gen.standard_normal(x.shape)
  alpha, sigma = math.sqrt(1 / (1 + math.exp(-logsnr_0))), math.sqrt(1 / (1 + math.exp(logsnr_0)))
  z = alpha * x + sigma * noise
  values = (2.0 * np.arange(256) - 255.0) / 255.0
  nll = np.zeros(x.shape[0])
  for index in np.ndindex(*x.shape):  # VDM's decoder, one element at a time
    logits = -0.5 * ((z[index] / alpha - values) * alpha / sigma)**2
    log_probs = logits - logits.max() - np.log(np.sum(np.exp(logits - logits.max())))
    nll[index[0]] -= log_probs[k[index]]
  got = likelihood.reconstruction_discrete(jnp.asarray(x), logsnr_0=logsnr_0, noise=jnp.asarray(noise))
  np.testing.assert_allclose(got, nll, rtol=1e-9, atol=1e-12)
  assert np.all(np.asarray(got) >= 0)
  if logsnr_0 == 20.0:  # sigma_0 / alpha_0 = 4.5e-5, 1/170 of a pixel step: lossless
    assert np.all(np.asarray(got) < 1e-6)
