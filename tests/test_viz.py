import numpy as np

from ragft_helpers.viz import pca_2d


def test_pca_keeps_the_main_direction_of_spread():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5
    points = np.outer(rng.normal(size=50) * 10, direction) + rng.normal(scale=0.1, size=(50, 3))
    projected = pca_2d(points)
    assert projected.shape == (50, 2)
    assert projected[:, 0].var() > 100 * projected[:, 1].var()
    assert np.allclose(projected.mean(axis=0), 0, atol=1e-9)
