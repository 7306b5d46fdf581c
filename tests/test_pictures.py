"""vaefunc.pictures: what each grid shows, and its pixel size."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import vaefunc
from vaefunc import pictures
from vaefunc.likelihoods import continuous_bernoulli_mean


def exact(a, b):
    assert_close(a, b, rtol=0, atol=0)


MODEL = vaefunc.VAE((1, 3, 4), latent_dim=2, hidden=(5,))
PARAMS = MODEL.init(0)


def test_traversal_rows_sweep_one_dimension():
    images = pictures.traversal_stack(PARAMS, (1, 3, 4), steps=3, span=2.0)
    assert pictures.traversal is pictures.traversal_stack  # the older name, kept
    assert images.shape == (6, 1, 3, 4)
    z = torch.tensor([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, -2.0], [0.0, 0.0], [0.0, 2.0]])
    exact(images, torch.sigmoid(MODEL.decode(PARAMS, z)).reshape(6, 1, 3, 4))


def test_reconstructions_are_inputs_then_decoded_means():
    x = torch.rand(4, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    out = pictures.reconstructions(PARAMS, x)
    exact(out[:4], x)
    mu, _ = MODEL.encode(PARAMS, x.reshape(4, 12))
    exact(out[4:], torch.sigmoid(MODEL.decode(PARAMS, mu)).reshape(4, 1, 3, 4))


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
        assert img.size == (1000, 320)


def test_continuous_bernoulli_pictures_show_its_mean():
    model = vaefunc.VAE((1, 2, 3), latent_dim=2, hidden=(8,))
    params = model.init(0)
    z = 3.0 * torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    logits = model.decode(params, z)
    images = pictures.mean_images(params, z, (1, 2, 3), likelihood="continuous_bernoulli")
    assert_close(images, continuous_bernoulli_mean(logits).reshape(5, 1, 2, 3))
    assert not torch.allclose(images.flatten(1), logits.clamp(0.0, 1.0))  # the logits themselves are not the mean


# ---------------------------------------------------------------- captions, scaling, honest labels


def _grid_region(img):
    left, top, right, bottom = img.info["grid_box"]
    return img.crop((left, top, right, bottom))


def test_labelled_grid_holds_the_plain_grid_scaled_by_nearest_neighbour():
    from PIL import Image

    images = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = pictures.image_grid(images, 10)
    img = pictures.labelled_grid(images, 10, title="what it shows", row_labels=["inputs", "reconstructions"],
                                 col_labels=[str(i) for i in range(10)])  # fmt: skip
    scale = img.info["scale"]
    assert plain.width < 200 <= plain.width * scale and img.width >= plain.width * scale
    assert _grid_region(img).tobytes() == plain.resize((plain.width * scale, plain.height * scale),
                                                       Image.NEAREST).tobytes()  # fmt: skip
    assert img.getpixel((1, 1)) == 255  # labels sit on white
    text = img.crop((0, 0, img.info["grid_box"][0], img.height))
    assert text.getextrema()[0] < 100  # the row labels are drawn, dark on white


def test_a_wide_grid_without_labels_is_the_plain_grid():
    images = torch.rand(12, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    img = pictures.labelled_grid(images, 12)
    assert img.info["scale"] == 1 and img.tobytes() == pictures.image_grid(images, 12).tobytes()


def test_columns_widen_to_fit_their_labels():
    img = pictures.labelled_grid(torch.rand(3, 1, 2, 2), 3, col_labels=["-3.0", "0", "+3.0"], min_width=0)
    assert img.info["scale"] > 1  # a 2-pixel column cannot hold "-3.0"


def test_label_counts_must_match_the_grid():
    with pytest.raises(ValueError, match="one label per row"):
        pictures.labelled_grid(torch.rand(4, 1, 3, 3), 2, row_labels=["a"])
    with pytest.raises(ValueError, match="one label per col"):
        pictures.labelled_grid(torch.rand(4, 1, 3, 3), 2, col_labels=["a", "b", "c"])


def test_save_png_keeps_the_layout(tmp_path):
    from PIL import Image

    img = pictures.labelled_grid(torch.rand(4, 1, 8, 8), 2, title="t")
    pictures.save_png(img, tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as back:
        back.load()
        assert back.text["vaefunc.grid_box"] == " ".join(map(str, img.info["grid_box"]))
        assert int(back.text["vaefunc.scale"]) == img.info["scale"] and back.tobytes() == img.tobytes()


def test_the_iwae_loss_plot_names_its_bound_and_the_test_elbo():
    title, lines = pictures.history_panels("iwae", 5)[0]
    assert lines["train"] == ("loss", 1.0, "train -IWAE_5") and lines["test"] == ("elbo", -1.0, "test -ELBO")
    assert "IWAE_5" in title and "ELBO" in title
    title, lines = pictures.history_panels("elbo")[0]
    assert title == "-ELBO" and {key for key, _, _ in lines.values()} == {"elbo"}


def test_a_one_epoch_plot_has_integer_epoch_ticks(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: drawn.append(fig) or save(fig, *a, **k))
    rows = [{"epoch": 1, "train_loss": 90.0, "train_elbo": -100.0, "test_elbo": -99.0, "train_recon": -90.0,
             "test_recon": -89.0, "train_kl": 10.0, "test_kl": 10.0}]  # fmt: skip
    pictures.plot_history(rows, tmp_path / "loss.png", objective="iwae", k=5)
    (fig,) = drawn
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1.0]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train -IWAE_5", "test -ELBO"]


def test_traverse_rows_are_sorted_by_kl_and_labelled():
    from vaefunc.cli import figures

    model = vaefunc.VAE((1, 3, 4), latent_dim=3, hidden=(5,))
    params = model.init(seed=0)
    kl = torch.tensor([0.5, 2.0, 0.0])
    img = figures.traverse_grid(model, params, 3, 2.0, kl=kl)
    want = vaefunc.traversal.traversal(params, None, dims=[1, 0, 2], steps=3, span=2.0, model=model)
    plain = pictures.image_grid(want.reshape(-1, 1, 3, 4), 3)
    scale = img.info["scale"]
    assert _grid_region(img).tobytes() == plain.resize((plain.width * scale, plain.height * scale), 0).tobytes()


# ---------------------------------------------------------------- readable words, latent pictures


def _ink_rows(img) -> int:
    """How many pixel rows of a white-background picture hold dark ink."""
    import numpy as np

    pixels = np.asarray(img.convert("L"))
    return int((pixels.min(axis=1) < 128).sum())


def test_words_are_at_least_12_pixels_high():
    img = pictures.labelled_grid(torch.rand(4, 1, 8, 8), 2, title="H")
    left, top, _, _ = img.info["grid_box"]
    assert _ink_rows(img.crop((0, 0, img.width, top))) >= 12  # the capital H of the title
    import matplotlib

    with matplotlib.rc_context(pictures.PLOT_STYLE):  # the plots: a capital is about 0.73 em of DejaVu Sans
        from matplotlib.font_manager import FontProperties

        for key in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "legend.fontsize"):
            points = FontProperties(size=matplotlib.rcParams[key]).get_size_in_points()
            assert points * pictures.PLOT_DPI / 72 * 0.73 >= 12, key


def test_a_space_between_words_is_a_visible_gap():
    """Pillow's small default face set "64 samples" as "64samples"."""
    from PIL import Image, ImageDraw

    font, draw = pictures._font(), ImageDraw.Draw(Image.new("L", (1, 1)))
    assert draw.textlength("64 samples", font=font) - draw.textlength("64samples", font=font) >= 4


def test_a_title_of_two_lines_is_two_lines_high():
    one = pictures.labelled_grid(torch.rand(4, 1, 8, 8), 2, title="one line")
    two = pictures.labelled_grid(torch.rand(4, 1, 8, 8), 2, title="one line\nand another")
    assert two.info["grid_box"][1] - one.info["grid_box"][1] >= 16


def test_the_manifold_decodes_a_grid_of_codes_z1_upwards():
    model = vaefunc.VAE((1, 3, 4), latent_dim=2, hidden=(5,))
    params = model.init(seed=0)
    images = pictures.manifold(params, steps=3, span=2.0, model=model)
    z = torch.tensor([[-2.0, 2.0], [0.0, 2.0], [2.0, 2.0], [-2.0, 0.0], [0.0, 0.0], [2.0, 0.0],
                      [-2.0, -2.0], [0.0, -2.0], [2.0, -2.0]])  # fmt: skip
    exact(images, model.mean(params, z).reshape(9, 1, 3, 4))
    with pytest.raises(ValueError, match="2 latent dimensions"):
        pictures.manifold(vaefunc.VAE((1, 3, 4), latent_dim=3).init(seed=0), model=vaefunc.VAE((1, 3, 4), latent_dim=3))


def test_the_latent_scatter_is_a_png_with_a_colour_per_label(tmp_path):
    from PIL import Image

    model = vaefunc.VAE((1, 3, 4), latent_dim=2, hidden=(5,))
    x = torch.rand(30, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    z = pictures.latent_means(model.init(seed=0), x, model=model, batch_size=7)
    exact(z, model.encode(model.init(seed=0), x.reshape(30, -1))[0])
    pictures.plot_latent(z, torch.arange(30) % 3, tmp_path / "latent.png", title="codes")
    with Image.open(tmp_path / "latent.png") as img:
        assert img.width >= 600 and img.height >= 580
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 20)}
    assert len(colours) > 20  # three label colours, blended: not a blank or one-colour picture
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        pictures.plot_latent(torch.zeros(3, 3), None, tmp_path / "x.png", title="")


def test_a_long_title_wraps_to_the_grid_in_balanced_lines():
    title = "test inputs and their reconstructions (decoded at z = mu), a long title on a narrow grid"
    img = pictures.labelled_grid(torch.rand(20, 1, 28, 28), 10, title=title)
    plain = pictures.image_grid(torch.rand(20, 1, 28, 28), 10)
    assert img.width <= plain.width + 2 * pictures.MARGIN  # the title does not widen the picture
    lines = pictures._wrap(title, 300, lambda t: 10 * len(t))
    assert " ".join(lines) == title and all(len(line) <= 30 for line in lines)
    assert len(lines) == 4 and max(map(len, lines)) - min(map(len, lines)) <= 8  # greedy: 21, 24, 27 and 16
