"""`image_source_target` read `shift` and `noise` only for target "shifted": with "5-9" a given
shift or noise built the same images as without it, silently. It now refuses them, as
`digits_transfer` does, before any data is loaded."""

import numpy as np
import pytest

from hypergrad.problems import pretrained as pre


@pytest.mark.parametrize("kwargs, message", [
    (dict(shift=3), r"image_source_target\(target='5-9', shift=3\): shift moves the 'shifted' target's images only; "
                    r"drop shift for target='5-9', or use target='shifted'"),
    (dict(noise=0.9), r"image_source_target\(target='5-9', noise=0.9\): noise blurs the 'shifted' target's images "
                      r"only; drop noise for target='5-9', or use target='shifted'"),
    (dict(shift=0, noise=0.0), r"image_source_target\(target='5-9', shift=0, noise=0.0\): shift moves .* and noise "
                               r"blurs .*; drop shift and noise for target='5-9', or use target='shifted'"),
])
def test_image_source_target_refuses_shift_and_noise_it_never_reads(monkeypatch, kwargs, message):
    def unread(*args, **kwargs):
        raise AssertionError("the images were loaded")
    monkeypatch.setattr(pre, "digits_images", unread)
    with pytest.raises(ValueError, match=message):
        pre.image_source_target("5-9", **kwargs)


def test_image_source_target_reads_what_it_did():
    for target, given in (("5-9", {}), ("shifted", dict(shift=1, noise=0.2))):
        default, explicit = pre.image_source_target(target), pre.image_source_target(target, **given)
        for a, b in zip(default, explicit):
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)
    (_, _), (moved, _) = pre.image_source_target("shifted", shift=2, noise=0.0)
    (_, _), (plain, _) = pre.image_source_target("shifted", shift=0, noise=0.0)
    assert not np.array_equal(moved, plain)
    with pytest.raises(ValueError, match=r"shift=9 must be an int of pixels from 0 to 7"):
        pre.image_source_target("shifted", shift=9)
    with pytest.raises(ValueError, match=r"target='x': choose one of"):
        pre.image_source_target("x", shift=1)


def test_digits_transfer_cnn_on_5_9_still_builds(tmp_path):
    # digits_transfer fills shift and noise in for every target and passed them on: only "shifted" reads them
    problem = pre.digits_transfer(5, model="cnn", channels=(2, 3), pretrain_steps=1, cache=tmp_path)
    assert problem.train_data[0].shape == (25, 8, 8, 1)
