"""The digits 0-4 -> 5-9 transfer's input standardisation (hypergrad/problems/pretrained.py, session 35).

The source MLP ("pretrained on digits 0-4") and the 5-9 target were standardised with the mean and
standard deviation of the train split of a 10-class split of all of digits: 537 target images, 128 of
the 200 few-shot test images among them, set the preprocessing the source model was pretrained with.
The statistics now come from the source examples alone, and the cache format moved on so that models
pretrained on the old features are not reused."""

import numpy as np

from hypergrad.problems import _data
from hypergrad.problems import pretrained as pre


def test_the_statistics_are_the_source_examples_alone():
    (xs, ys), (xt, yt) = pre.digits_source_target(dtype=np.float64)
    assert set(np.unique(ys)) == set(pre.SOURCE_CLASSES) and set(np.unique(yt)) == set(range(5))
    np.testing.assert_allclose(xs.mean(axis=0), 0.0, atol=1e-12)  # centred on the source examples
    std = xs.std(axis=0)
    assert np.all(np.isclose(std, 1.0, atol=1e-12) | (std == 0.0))  # unit spread there (or a constant pixel)
    # the target gets the same per-pixel map, whatever its own images: fitted without them
    x, y = _data.raw("digits")
    source = np.isin(y, pre.SOURCE_CLASSES)
    spread = np.where(x[source].std(axis=0) > 1e-8, x[source].std(axis=0), 1.0)
    np.testing.assert_allclose(xt, (x[~source] - x[source].mean(axis=0)) / spread, atol=1e-12)


def test_models_pretrained_on_the_old_features_are_not_reused():
    assert pre.FORMAT_VERSION >= 3  # part of every cache file's name and configuration
