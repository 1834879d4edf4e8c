"""Frechet distance between Gaussian fits of two feature sets (FID, Heusel et al. 2017; FVD,
Unterthiner et al. 2018), in NumPy float64.

The Frechet (2-Wasserstein) distance between N(m1, C1) and N(m2, C2) is (Dowson & Landau 1982)

    d^2 = |m1 - m2|^2 + Tr(C1) + Tr(C2) - 2 Tr((C1 C2)^(1/2)).

FID and FVD report d^2 (not d), and so does this module.
"""

import numpy as np


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and unbiased covariance [D, D] (divided by N - 1, as TF-GAN and the FVD code) of
  feature rows [N, D], N >= 2, in float64."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f'features must be [N, D] with N >= 2, got shape {x.shape}.')
  mean = x.mean(axis=0)
  centered = x - mean
  return mean, centered.T @ centered / (x.shape[0] - 1)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric positive semi-definite matrix; eigenvalues that rounding
  made slightly negative count as 0."""
  w, v = np.linalg.eigh((matrix + matrix.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(*, cov1: np.ndarray, cov2: np.ndarray) -> float:
  """Tr((C1 C2)^(1/2)) = Tr((C1^(1/2) C2 C1^(1/2))^(1/2)).

  C1 C2 is similar to the symmetric PSD matrix C1^(1/2) C2 C1^(1/2) (same eigenvalues, all real
  and >= 0), so the trace is the sum of the square roots of that matrix's eigenvalues: `eigh` of
  symmetric matrices only, no general (complex) matrix square root, and singular covariances
  (fewer samples than dimensions) need no regularising offset.
  """
  root = _sqrt_psd(np.asarray(cov1, np.float64))
  product = root @ np.asarray(cov2, np.float64) @ root
  eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
  return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def frechet_distance(*, mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray,
                     cov2: np.ndarray) -> float:
  """d^2 = |m1 - m2|^2 + Tr(C1) + Tr(C2) - 2 Tr((C1 C2)^(1/2)) between N(m1, C1) and N(m2, C2);
  means [D], covariances [D, D] symmetric PSD. Clipped at 0 (rounding can dip below)."""
  mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  D = mean1.shape[0]
  if mean2.shape != (D,) or cov1.shape != (D, D) or cov2.shape != (D, D):
    raise ValueError(f'Shapes do not match: mean1 {mean1.shape}, cov1 {cov1.shape}, '
                     f'mean2 {mean2.shape}, cov2 {cov2.shape}.')
  d2 = (np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2)
        - 2.0 * trace_sqrt_product(cov1=cov1, cov2=cov2))
  return float(max(d2, 0.0))


def frechet_distance_of_features(a: np.ndarray, b: np.ndarray) -> float:
  """d^2 between the Gaussian fits of feature rows a [N, D] and b [M, D] (symmetric in a, b)."""
  mean1, cov1 = gaussian_fit(a)
  mean2, cov2 = gaussian_fit(b)
  return frechet_distance(mean1=mean1, cov1=cov1, mean2=mean2, cov2=cov2)
