"""The one partial-class test of the scikit-learn searches (`trained_classes`): a fold whose training
part holds at least two but not all of the data's classes is recoded among those (`own_classes`),
whatever the integer dtype of the class codes, signed or not."""

import numpy as np
import pytest

from hypergrad.sklearn._search import own_classes, trained_classes

CLASSES = np.array(["a", "b", "c"])


def partial_fold(dtype):
    """A fold training on classes 0 and 2 of three; its validation part holds all three."""
    x = np.arange(12.0).reshape(6, 2)
    y_train = np.array([0, 2, 0, 2], dtype)
    y_val = np.array([1, 2, 0, 1, 0, 2], dtype)
    return ((x[:4], y_train), (x, y_val))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.int32, np.int64])
def test_a_partial_fold_is_recoded_among_its_classes_whatever_the_codes_dtype(dtype):
    own = own_classes([partial_fold(dtype)], CLASSES)
    (x_train, y_train), (x_val, y_val) = own.pairs[0]
    assert own.classes[0].tolist() == ["a", "c"]
    assert own.counted == [4]  # the two validation examples of class "b" are misses
    assert y_train.tolist() == [0, 1, 0, 1] and y_train.dtype == dtype
    assert y_val.tolist() == [1, 0, 0, 1] and y_val.dtype == dtype
    np.testing.assert_array_equal(x_val, np.arange(12.0).reshape(6, 2)[[1, 2, 4, 5]])


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_trained_classes_is_partial_for_two_or_more_but_not_all_classes(dtype):
    assert trained_classes(np.array([2, 0, 2], dtype), 3).seen.tolist() == [0, 2]
    assert trained_classes(np.array([2, 0, 2], dtype), 3).partial
    assert not trained_classes(np.array([1, 1], dtype), 3).partial  # one class: fitted as it is
    assert not trained_classes(np.array([0, 1, 2], dtype), 3).partial  # every class
