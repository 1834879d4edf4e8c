"""Noise priors: how the diffusion noise is correlated across the frames of a video.

  'independent'  eps ~ N(0, I), every element independent (the usual; DDPM, VDM).
  'mixed'        eps_f = (alpha eps_shared + eps'_f) / sqrt(1 + alpha^2): one noise image shared by
                 all frames plus one per frame (Ge et al. 2023, "Preserve Your Own Correlation",
                 the mixed noise model); any two frames correlate by alpha^2 / (1 + alpha^2).
  'progressive'  eps_0 = eps'_0, eps_f = (alpha eps_{f-1} + eps'_f) / sqrt(1 + alpha^2): each frame's
                 noise continues the previous frame's (ibid., the progressive model); frames f and g
                 correlate by rho^|f - g|, rho = alpha / sqrt(1 + alpha^2).

(eps', eps_shared i.i.d. N(0, I).) Every element keeps unit variance and pixels and channels stay
independent; only the covariance across frames, Sigma [F, F], changes. So the forward process is
q(z_t | x) = N(alpha_t x, sigma_t^2 Sigma), with one Sigma for every t: a Gaussian Markov chain whose
transitions, posteriors and samplers keep their formulas, each fresh noise drawn from N(0, Sigma)
instead of N(0, I) (the Langevin corrector becomes the Sigma-preconditioned one). The network learns
to predict the correlated eps. Why it may help video: the shared part of the noise cancels in frame
differences, so motion shows through at noise levels where each frame alone is still hidden, and
the sampler's initial noise no longer points each frame somewhere else.

Arrays are [batch, frames, ...] (e.g. [batch, frames, height, width, channels]): the prior acts on
axis 1. With a factor L, L L^T = Sigma, `color` maps i.i.d. noise to the prior's and `whiten` maps
back; the VLB under the prior is the usual VLB of the whitened data (likelihood.vlb).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

NOISE_PRIORS = ('independent', 'mixed', 'progressive')


@dataclasses.dataclass(frozen=True)
class NoisePrior:
  """One of NOISE_PRIORS with its alpha (> 0; unused by 'independent')."""
  kind: str = 'independent'
  alpha: float = 1.0

  def __post_init__(self):
    if self.kind not in NOISE_PRIORS:
      raise ValueError(f'Unknown noise prior {self.kind!r}; allowed values: {NOISE_PRIORS}.')
    if self.kind != 'independent' and not self.alpha > 0:
      raise ValueError(f'The {self.kind!r} noise prior needs alpha > 0, got {self.alpha!r}.')

  @classmethod
  def from_config(cls, config) -> 'NoisePrior':
    """The prior of `config.diffusion` (noise_prior, noise_prior_alpha)."""
    d = config.diffusion
    return cls(d.get('noise_prior', 'independent'), float(d.get('noise_prior_alpha', 1.0)))

  @property
  def independent(self) -> bool:
    return self.kind == 'independent'

  def covariance(self, num_frames: int) -> np.ndarray:
    """Sigma [F, F] float64: the correlation of the noise between frames (unit diagonal)."""
    frames = np.arange(num_frames)
    if self.kind == 'independent':
      return np.eye(num_frames)
    if self.kind == 'mixed':
      shared = self.alpha**2 / (1 + self.alpha**2)
      return (1 - shared) * np.eye(num_frames) + shared
    rho = self.alpha / np.sqrt(1 + self.alpha**2)
    return rho ** np.abs(frames[:, None] - frames[None, :]).astype(np.float64)

  def factor(self, num_frames: int) -> np.ndarray:
    """L [F, F] float64 with L L^T = Sigma, as the prior's own construction draws the noise:
    mixed, the symmetric square root (I + c 11^T) / sqrt(1 + alpha^2) (c solves
    F c^2 + 2 c = alpha^2); progressive, the lower-triangular recursion."""
    if self.kind == 'independent':
      return np.eye(num_frames)
    a2 = self.alpha**2
    if self.kind == 'mixed':
      c = (np.sqrt(1 + num_frames * a2) - 1) / num_frames
      return (np.eye(num_frames) + c) / np.sqrt(1 + a2)
    rho = self.alpha / np.sqrt(1 + a2)
    frames = np.arange(num_frames)
    lag = (frames[:, None] - frames[None, :]).astype(np.float64)
    lower = np.where(lag >= 0, rho ** np.maximum(lag, 0), 0.0)
    # Column 0 is the first frame's noise itself; later columns enter scaled by sqrt(1 - rho^2).
    return lower * np.where(frames[None, :] == 0, 1.0, np.sqrt(1 - rho**2))

  def _apply(self, matrix: np.ndarray, a: jax.Array) -> jax.Array:
    a = jnp.asarray(a)
    if a.ndim < 2:
      raise ValueError(f'Noise priors act on axis 1 (frames) of [batch, frames, ...]; got shape {a.shape}.')
    m = jnp.asarray(matrix, a.dtype)
    return jnp.moveaxis(jnp.tensordot(m, a, axes=[[1], [1]]), 0, 1)

  def color(self, white: jax.Array) -> jax.Array:
    """i.i.d. N(0, 1) noise [B, F, ...] -> the prior's noise (L along frames); 'independent': as is."""
    if self.independent:
      return white
    return self._apply(self.factor(white.shape[1]), white)

  def whiten(self, a: jax.Array) -> jax.Array:
    """L^{-1} along frames: the prior's noise -> i.i.d.; 'independent': as is."""
    if self.independent:
      return a
    return self._apply(np.linalg.inv(self.factor(a.shape[1])), a)

  def sample(self, rng: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Noise of `shape` [B, F, ...] drawn from the prior. 'independent' draws exactly
    jax.random.normal(rng, shape, dtype), so runs without a prior keep their random streams."""
    return self.color(jax.random.normal(rng, tuple(shape), dtype))


INDEPENDENT = NoisePrior()
