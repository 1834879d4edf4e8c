"""The Frechet distance (vdm_jax/metrics/frechet.py) against closed forms for Gaussians."""

import numpy as np
import pytest
from scipy import linalg

from vdm_jax.metrics import frechet


def _random_cov(rng, d, rank=None):
  a = rng.standard_normal((d, rank or d))
  return a @ a.T / d


def test_distance_to_itself_is_zero_even_when_singular():
  rng = np.random.default_rng(0)
  full = rng.standard_normal((200, 8)) @ rng.standard_normal((8, 8))
  few = rng.standard_normal((10, 32))  # N < D: rank-9 covariance
  for x in (full, few):
    _, cov = frechet.gaussian_fit(x)
    assert frechet.frechet_distance_of_features(x, x) <= 1e-6 * np.trace(cov)


def test_symmetric_and_invariant_to_rotations_and_shifts():
  rng = np.random.default_rng(1)
  a = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6))
  b = rng.standard_normal((250, 6)) * 2 + 1
  d = frechet.frechet_distance_of_features(a, b)
  assert d > 1
  np.testing.assert_allclose(frechet.frechet_distance_of_features(b, a), d, rtol=1e-10)
  q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
  shift = rng.standard_normal(6)
  np.testing.assert_allclose(frechet.frechet_distance_of_features(a @ q + shift, b @ q + shift), d,
                             rtol=1e-9)


def test_diagonal_closed_form():
  rng = np.random.default_rng(2)
  m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
  s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
  got = frechet.frechet_distance(mean1=m1, cov1=np.diag(s1), mean2=m2, cov2=np.diag(s2))
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_non_diagonal_matches_two_other_computations():
  rng = np.random.default_rng(3)
  # 2 x 2: the eigenvalues l1, l2 of C1 C2 are real and >= 0, so
  # Tr((C1 C2)^(1/2)) = sqrt(l1) + sqrt(l2) = sqrt(Tr(C1 C2) + 2 sqrt(det C1 det C2)).
  c1, c2 = _random_cov(rng, 2), _random_cov(rng, 2)
  m1, m2 = rng.standard_normal(2), rng.standard_normal(2)
  trace_root = np.sqrt(np.trace(c1 @ c2) + 2 * np.sqrt(np.linalg.det(c1) * np.linalg.det(c2)))
  expected = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * trace_root
  np.testing.assert_allclose(frechet.frechet_distance(mean1=m1, cov1=c1, mean2=m2, cov2=c2),
                             expected, rtol=1e-10)
  # 7 x 7, one covariance singular: against SciPy's general matrix square root of C1 C2.
  c1, c2 = _random_cov(rng, 7), _random_cov(rng, 7, rank=4)
  expected = np.trace(c1) + np.trace(c2) - 2 * np.real(np.trace(linalg.sqrtm(c1 @ c2)))
  np.testing.assert_allclose(frechet.frechet_distance(mean1=np.zeros(7), cov1=c1,
                                                      mean2=np.zeros(7), cov2=c2),
                             expected, rtol=1e-6)


def test_estimate_from_samples_approaches_closed_form():
  rng = np.random.default_rng(4)
  c1, c2 = _random_cov(rng, 3), _random_cov(rng, 3)
  m1, m2 = np.array([1.0, 0.0, -1.0]), np.zeros(3)
  exact = frechet.frechet_distance(mean1=m1, cov1=c1, mean2=m2, cov2=c2)
  errors = []
  for n in (100, 30000):
    a = rng.multivariate_normal(m1, c1, size=n)
    b = rng.multivariate_normal(m2, c2, size=n)
    errors.append(abs(frechet.frechet_distance_of_features(a, b) - exact))
  assert errors[1] < 0.02 * exact
  assert errors[1] < errors[0]


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match='N >= 2'):
    frechet.gaussian_fit(np.zeros((1, 3)))
  with pytest.raises(ValueError, match='do not match'):
    frechet.frechet_distance(mean1=np.zeros(2), cov1=np.eye(2), mean2=np.zeros(3), cov2=np.eye(3))
