"""Errors of a generated video against the true one, for conditional tasks (prediction,
interpolation, super-resolution, inpainting): PSNR, SSIM and, for moving_shapes, the tracker's
trajectory error in pixels. NumPy, on uint8 videos [N, T, H, W, 3].
"""

import numpy as np
from scipy import ndimage

from vdm_jax.data import tracker


def psnr(generated: np.ndarray, truth: np.ndarray, *, where: np.ndarray | None = None) -> np.ndarray:
  """Peak signal-to-noise ratio per video, 10 log10(255^2 / MSE), in dB.

  generated, truth: uint8 [N, T, H, W, C]; where: bool broadcastable to them, the entries the
  MSE averages over (default all). Identical videos give +inf. Returns float64 [N].
  """
  g, t = np.asarray(generated, np.float64), np.asarray(truth, np.float64)
  weight = np.broadcast_to(np.ones(1) if where is None else np.asarray(where, np.float64), g.shape)
  axes = tuple(range(1, g.ndim))
  mse = np.sum(weight * (g - t) ** 2, axis=axes) / np.maximum(np.sum(weight, axis=axes), 1)
  with np.errstate(divide='ignore'):
    return 10.0 * np.log10(255.0 ** 2 / mse)


def ssim(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """Structural similarity (Wang et al. 2004) per video: the mean over frames, pixels and channels
  of the SSIM map with an 11x11 Gaussian window (std 1.5), K1 = 0.01, K2 = 0.03, L = 255:

    SSIM = (2 mu_g mu_t + C1)(2 cov_gt + C2) / ((mu_g^2 + mu_t^2 + C1)(var_g + var_t + C2)),

  C1 = (K1 L)^2, C2 = (K2 L)^2, local moments by Gaussian filtering of each frame and channel
  (borders reflected). generated, truth: uint8 [N, T, H, W, C]. Returns float64 [N] in [-1, 1].
  """
  g, t = np.asarray(generated, np.float64), np.asarray(truth, np.float64)
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  # Filter H and W only; truncate 3.5 std = the 11-pixel window of Wang et al.
  blur = lambda a: ndimage.gaussian_filter(a, sigma=(0, 0, 1.5, 1.5, 0), truncate=3.5,
                                           mode='reflect')
  mu_g, mu_t = blur(g), blur(t)
  var_g = blur(g * g) - mu_g ** 2
  var_t = blur(t * t) - mu_t ** 2
  cov = blur(g * t) - mu_g * mu_t
  ssim_map = ((2 * mu_g * mu_t + c1) * (2 * cov + c2)
              / ((mu_g ** 2 + mu_t ** 2 + c1) * (var_g + var_t + c2)))
  return ssim_map.mean(axis=tuple(range(1, g.ndim)))


def trajectory_error(generated: np.ndarray, truth: np.ndarray, *,
                     frames: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Mean distance in pixels between the tracked centroids of each true moving_shapes object and of
  the generated object of the same color, over `frames` (default all).

  Each true object (tracker.track_video of the true video) is matched to the generated object of
  its color. Returns (error float64 [N]: the mean over the true objects and the frames where both
  are found, NaN when there are none; found float64 [N]: the fraction of (object, frame) pairs
  of the true video that are found in the generated one). generated, truth: uint8 [N, T, H, W, 3].
  """
  errors, found = [], []
  for g, t in zip(generated, truth):
    frame_ids = np.arange(t.shape[0]) if frames is None else np.asarray(frames)
    tracked = {o['color']: o['centroids'] for o in tracker.track_video(g)}
    distances, pairs, hits = [], 0, 0
    for obj in tracker.track_video(t):
      true_c = obj['centroids'][frame_ids]
      gen_c = tracked.get(obj['color'], np.full_like(obj['centroids'], np.nan))[frame_ids]
      both = ~np.isnan(true_c[:, 0]) & ~np.isnan(gen_c[:, 0])
      pairs += int(np.sum(~np.isnan(true_c[:, 0])))
      hits += int(np.sum(both))
      distances.extend(np.hypot(*(gen_c[both] - true_c[both]).T))
    errors.append(float(np.mean(distances)) if distances else float('nan'))
    found.append(hits / pairs if pairs else float('nan'))
  return np.asarray(errors), np.asarray(found)
