"""vaefunc.pictures: what each grid shows, and its pixel size."""

from __future__ import annotations

import torch
from torch.testing import assert_close

import vaefunc
from vaefunc import pictures
from vaefunc.likelihoods import continuous_bernoulli_mean


def exact(a, b):
    assert_close(a, b, rtol=0, atol=0)


PARAMS = vaefunc.init((1, 3, 4), latent_dim=2, hidden=(5,), seed=0)


def test_traversal_rows_sweep_one_dimension():
    images = pictures.traversal(PARAMS, (1, 3, 4), steps=3, span=2.0)
    assert images.shape == (6, 1, 3, 4)
    z = torch.tensor([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, -2.0], [0.0, 0.0], [0.0, 2.0]])
    exact(images, torch.sigmoid(vaefunc.decode(PARAMS, z)).reshape(6, 1, 3, 4))


def test_reconstructions_are_inputs_then_decoded_means():
    x = torch.rand(4, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    out = pictures.reconstructions(PARAMS, x)
    exact(out[:4], x)
    mu, _ = vaefunc.encode(PARAMS, x.reshape(4, 12))
    exact(out[4:], torch.sigmoid(vaefunc.decode(PARAMS, mu)).reshape(4, 1, 3, 4))


def test_interpolation_ends_at_the_codes():
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.rand(2, 1, 3, 4, generator=g), torch.rand(2, 1, 3, 4, generator=g)
    out = pictures.interpolation(PARAMS, xa, xb, steps=5).reshape(2, 5, 1, 3, 4)
    exact(out[:, 0], pictures.reconstructions(PARAMS, xa)[2:])
    assert_close(out[:, -1], pictures.reconstructions(PARAMS, xb)[2:])


def test_grid_pixel_size_and_modes():
    gray = pictures.image_grid(torch.rand(7, 1, 3, 4), 3)
    assert gray.size == pictures.grid_size(3, 3, 3, 4) == (3 * 4 + 4 * 2, 3 * 3 + 4 * 2)
    assert gray.mode == "L"
    rgb = pictures.image_grid(torch.ones(2, 3, 5, 5), 2, pad=0)
    assert rgb.mode == "RGB" and rgb.size == (10, 5) and rgb.getpixel((0, 0)) == (255, 255, 255)


def test_plot_history_writes_a_png(tmp_path):
    from PIL import Image

    rows = [{"epoch": e, "train_elbo": -100.0 + e, "test_elbo": -99.0, "train_recon": -90.0, "test_recon": -89.0,
             "train_kl": 10.0, "test_kl": 10.0} for e in (1, 2, 3)]  # fmt: skip
    pictures.plot_history(rows, tmp_path / "loss.png")
    with Image.open(tmp_path / "loss.png") as img:
        assert img.size == (800, 240)


def test_continuous_bernoulli_pictures_show_its_mean():
    params = vaefunc.init((1, 2, 3), latent_dim=2, hidden=(8,), seed=0)
    z = 3.0 * torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    logits = vaefunc.decode(params, z)
    images = pictures.mean_images(params, z, (1, 2, 3), likelihood="continuous_bernoulli")
    assert_close(images, continuous_bernoulli_mean(logits).reshape(5, 1, 2, 3))
    assert not torch.allclose(images.flatten(1), logits.clamp(0.0, 1.0))  # the logits themselves are not the mean
