"""Procedural dSprites: determinism, factor coverage, and images that follow their factors."""

from __future__ import annotations

import math

import pytest
import torch

from vaefunc.data import dsprites as ds


@pytest.fixture(scope="module")
def sample():
    return ds.generate(3000, seed=0)


def test_same_n_and_seed_give_the_same_images(sample):
    first, again = ds.generate(500, seed=0), ds.generate(500, seed=0)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    other = ds.generate(500, seed=1)
    assert not torch.equal(other.labels, first.labels)
    # an image depends on its factors only, not on what else is rendered with it
    torch.testing.assert_close(ds.render(sample.labels[17:19]), sample.images[17:19], rtol=0, atol=0)


def test_shapes_values_and_factor_coverage(sample):
    images, factors = sample
    assert images.shape == (3000, 1, 64, 64) and images.dtype == torch.float32
    assert factors.shape == (3000, 5) and factors.dtype == torch.int64
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    assert bool((images.sum((1, 2, 3)) > 0).all())  # every sprite is visible
    # every value of every factor occurs: with n = 3000 the rarest value (1 in 40) is expected 75 times,
    # and P(some value never occurs) < 40 * (1 - 1/40)^3000 ~ 1e-31
    for f, size in enumerate(ds.FACTOR_SIZES):
        counts = torch.bincount(factors[:, f], minlength=size)
        assert counts.shape == (size,) and bool((counts > 0).all()), ds.FACTORS[f]
        # uniform: each count within 6 binomial standard deviations (false alarm < 1e-8 per value)
        p = 1 / size
        sd = math.sqrt(3000 * p * (1 - p))
        assert bool(((counts - 3000 * p).abs() < 6 * sd).all()), ds.FACTORS[f]


def test_the_square_at_full_scale_is_16_pixels_wide_and_area_grows_with_scale():
    square = ds.render(torch.tensor([[0, 5, 0, 16, 16]]))[0, 0]
    rows, cols = torch.nonzero(square, as_tuple=True)
    assert int(rows.max() - rows.min()) + 1 == 16 and int(cols.max() - cols.min()) + 1 == 16
    for shape in range(3):
        areas = [float(ds.render(torch.tensor([[shape, s, 3, 10, 20]])).sum()) for s in range(6)]
        assert areas == sorted(areas) and areas[-1] > 3 * areas[0] * 0.9  # area ~ scale^2, scale 0.5 -> 1


def test_position_moves_the_centroid_and_orientation_turns_the_sprite():
    def centroid(f):
        img = ds.render(torch.tensor([f]))[0, 0]
        ys, xs = torch.nonzero(img, as_tuple=True)
        return float(xs.float().mean()), float(ys.float().mean())

    x0, y0 = centroid([1, 3, 0, 0, 31])
    x1, y1 = centroid([1, 3, 0, 31, 0])
    assert x1 - x0 > 30 and y0 - y1 > 30  # pos_x left to right, pos_y top to bottom
    ellipse = ds.render(torch.tensor([[1, 5, 0, 16, 16], [1, 5, 10, 16, 16]]))[:, 0]  # 0 and 90 degrees
    torch.testing.assert_close(ellipse[1], ellipse[0].T, rtol=0, atol=0)  # a quarter turn transposes it here
    heart = ds.render(torch.tensor([[2, 5, 0, 16, 16]]))[0, 0]
    rows, cols = torch.nonzero(heart, as_tuple=True)
    crop = heart[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    widths = crop.sum(1)
    assert int(widths.argmax()) < crop.shape[0] // 2 and widths[-1] < widths[0] / 2  # lobes up, point down


def test_three_distinct_shapes_and_split_streams():
    imgs = ds.render(torch.tensor([[s, 5, 0, 16, 16] for s in range(3)]))
    assert len({tuple(i.flatten().tolist()) for i in imgs}) == 3
    train, test = ds.load_dsprites("train", n=50, seed=0), ds.load_dsprites("test", n=50, seed=0)
    assert not torch.equal(train.labels, test.labels)
    assert torch.equal(ds.load_dsprites("train", n=50, seed=0).images, train.images)


def test_bad_input():
    with pytest.raises(ValueError, match="positive int"):
        ds.generate(0)
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        ds.render(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer"):
        ds.render(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\[0, size\)"):
        ds.render(torch.tensor([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="split"):
        ds.load_dsprites("valid", n=5)


def test_loadable_by_name():
    import vaefunc

    x, factors = vaefunc.data.load("dsprites", n=40, split="test")
    same = ds.load_dsprites("test", n=40)
    assert torch.equal(x, same.images) and torch.equal(factors, same.labels)
    assert x.shape == (40, 1, 64, 64) and factors.shape == (40, 5)
    assert vaefunc.data.load("dsprites", n=40, limit=10).images.shape == (10, 1, 64, 64)
