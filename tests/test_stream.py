"""stream.py: train over a Dataset equals train over the tensor it wraps, bit for bit (resume included);
a DataLoader is read in its own order (bit for bit when that order is vaefunc's); labels come from
(x, y); train_many streams too; bad streamed input fails before any step, or at the batch that holds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, TensorDataset

import vaefunc
from vaefunc.rng import make_streams
from tests import oracles
from tests import strategies as S

QUIET = dict(progress=False, compile=False)
N, D, B = 96, 16, 16  # 6 steps an epoch


def _tiny(seed: int = 0, n_classes: int = 0, **kw):
    params = vaefunc.VAE((D,), latent_dim=2, hidden=(8,), n_classes=n_classes).init(seed, **kw)
    return params, S.rand(seed + 100, N, D, dtype=next(iter(params.values())).dtype)


def _same(a, b):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


class Rows(Dataset):
    """A map-style Dataset over a tensor's rows, x or (x, y): what a Dataset of files would give."""

    def __init__(self, x, y=None, shape=None):
        self.x, self.y, self.shape = x, y, shape

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        x = self.x[i] if self.shape is None else self.x[i].reshape(self.shape)
        return x if self.y is None else (x, self.y[i])


class VaefuncOrder(Sampler):
    """A sampler that yields the permutation vaefunc's data stream draws for ``seed``, epoch after epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.gen = n, make_streams(seed).data

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.gen).tolist())


class Epochs(Sampler):
    """A reproducible order: a permutation seeded by the epoch that ``set_epoch`` gives it."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return N

    def __iter__(self):
        return iter(torch.randperm(N, generator=S.generator(self.epoch)).tolist())


# ------------------------------------------------------------------ equal to the tensor run


@pytest.mark.parametrize("binarize", [None, "static", "dynamic"])
def test_a_dataset_over_a_tensor_trains_bit_for_bit_as_the_tensor(binarize):
    params, x = _tiny()
    kw = dict(epochs=2, batch_size=B, seed=3, binarize=binarize, **QUIET)
    ref = vaefunc.train(params, x, **kw)
    for data in (TensorDataset(x), Rows(x, shape=(1, 4, 4))):  # a (1, 4, 4) example is flattened as a tensor's
        got = vaefunc.train(params, data, **kw)
        _same(got.params, ref.params)
        oracles.assert_identical(got.opt_state, ref.opt_state)
        assert [h["loss"] for h in got.history] == [h["loss"] for h in ref.history]
    assert float((ref.params["encoder.0.weight"] - params["encoder.0.weight"]).abs().max()) > 1e-3  # it trained


def test_a_dataloader_in_vaefuncs_order_trains_bit_for_bit_as_the_tensor():
    params, x = _tiny()
    kw = dict(epochs=2, batch_size=B, seed=4, **QUIET)
    ref = vaefunc.train(params, x, **kw)
    loader = DataLoader(TensorDataset(x), batch_size=B, sampler=VaefuncOrder(N, seed=4))
    _same(vaefunc.train(params, loader, **kw).params, ref.params)
    # A list of batches in that order: the same again (the last, short batch is dropped).
    perm = torch.randperm(N, generator=make_streams(4).data)
    one_epoch = [x[perm[i : i + B]] for i in range(0, N, B)] + [x[:3]]
    got = vaefunc.train(params, one_epoch, epochs=1, batch_size=B, seed=4, **QUIET)
    _same(got.params, vaefunc.train(params, x, epochs=1, batch_size=B, seed=4, **QUIET).params)


def test_a_shuffling_dataloader_trains_in_its_own_order():
    params, x = _tiny()
    kw = dict(epochs=2, batch_size=B, seed=4, **QUIET)
    loader = DataLoader(TensorDataset(x), batch_size=B, shuffle=True, generator=torch.Generator().manual_seed(9))
    result = vaefunc.train(params, loader, **kw)
    assert int(result.opt_state[0].count) == 2 * (N // B) and len(result.history) == 2
    with pytest.raises(AssertionError):
        _same(result.params, vaefunc.train(params, x, **kw).params)


def test_a_partial_last_batch_of_a_dataloader_is_dropped():
    params, x = _tiny()
    loader = DataLoader(TensorDataset(x[:90]), batch_size=B)  # 5 full batches and one of 10
    result = vaefunc.train(params, loader, epochs=2, batch_size=B, **QUIET)
    assert int(result.opt_state[0].count) == 2 * 5


# --------------------------------------------------------------------------- labels


def test_labels_come_from_x_y_examples_and_batches():
    params, x = _tiny(n_classes=3)
    y = torch.randint(0, 3, (N,), generator=S.generator(1))
    kw = dict(epochs=2, batch_size=B, seed=2, **QUIET)
    ref = vaefunc.train(params, x, labels=y, **kw)
    _same(vaefunc.train(params, TensorDataset(x, y), **kw).params, ref.params)
    _same(vaefunc.train(params, Rows(x, torch.nn.functional.one_hot(y, 3).double()), **kw).params, ref.params)
    _same(vaefunc.train(params, Rows(x), labels=y, **kw).params, ref.params)  # labels= beside a Dataset
    loader = DataLoader(TensorDataset(x, y), batch_size=B, sampler=VaefuncOrder(N, seed=2))
    _same(vaefunc.train(params, loader, **kw).params, ref.params)


def test_an_unconditional_model_ignores_the_labels_of_x_y_examples():
    params, x = _tiny()
    y = torch.zeros(N, dtype=torch.int64)
    kw = dict(epochs=1, batch_size=B, **QUIET)
    _same(vaefunc.train(params, TensorDataset(x, y), **kw).params, vaefunc.train(params, x, **kw).params)


def test_a_semi_supervised_model_streams_a_dataset_with_labels_given():
    model = vaefunc.VAE((D,), latent_dim=2, hidden=(6,), n_classes=3, semi_supervised=True)
    params, x = model.init(seed=0, dtype=torch.float64), S.rand(5, N, D)
    y = torch.where(torch.arange(N) % 4 == 0, torch.arange(N) % 3, -1)
    kw = dict(model=model, epochs=1, batch_size=B, seed=1, **QUIET)
    _same(vaefunc.train(params, Rows(x), labels=y, **kw).params, vaefunc.train(params, x, labels=y, **kw).params)
    with pytest.raises(ValueError, match="semi-supervised model builds each epoch .* labels= \\(n,\\) beside it"):
        vaefunc.train(params, TensorDataset(x, y), **kw)


# ------------------------------------------------------------------- ensembles, resume


@pytest.mark.parametrize("seed", [0, [3, 4]])
def test_train_many_streams_a_dataset_bit_for_bit(seed):
    stacked = vaefunc.init_many(2, (D,), latent_dim=2, hidden=(8,), seed=0)
    x = S.rand(7, N, D, dtype=torch.float32)
    kw = dict(epochs=2, batch_size=B, seed=seed, beta=[0.5, 2.0], **QUIET)
    ref = vaefunc.train_many(stacked, x, **kw)
    got = vaefunc.train_many(stacked, TensorDataset(x), **kw)
    _same(got.params, ref.params)
    assert [[h["loss"] for h in member] for member in got.history] == [[h["loss"] for h in m] for m in ref.history]


def _stop_after(k: int):
    count = [0]

    def should_stop():
        count[0] += 1
        return count[0] >= k

    return should_stop


@pytest.mark.parametrize("binarize", [None, "dynamic"])
def test_a_resumed_dataset_run_equals_the_uninterrupted_one(binarize):
    params, x = _tiny()
    kw = dict(epochs=3, batch_size=B, seed=5, binarize=binarize, **QUIET)
    full = vaefunc.train(params, Rows(x), **kw)
    part = vaefunc.train(params, Rows(x), **kw, should_stop=_stop_after(8))  # mid-epoch 2
    assert part.interrupted and (part.state.epoch, part.state.step) == (1, 2)
    rest = vaefunc.train(params, Rows(x), **kw, resume=part.state)
    _same(rest.params, full.params)
    _same(full.params, vaefunc.train(params, x, **kw).params)


def test_a_resumed_dataloader_run_restarts_its_epoch_and_is_exact_when_its_order_is():
    """A sampler whose order depends only on the epoch, through set_epoch: the resumed run is exact."""
    params, x = _tiny()
    kw = dict(epochs=3, batch_size=B, seed=5, **QUIET)
    full = vaefunc.train(params, DataLoader(TensorDataset(x), batch_size=B, sampler=Epochs()), **kw)
    part = vaefunc.train(params, DataLoader(TensorDataset(x), batch_size=B, sampler=Epochs()), **kw,
                         should_stop=_stop_after(9))  # fmt: skip
    rest = vaefunc.train(params, DataLoader(TensorDataset(x), batch_size=B, sampler=Epochs()), **kw,
                         resume=part.state)  # fmt: skip
    _same(rest.params, full.params)


def test_a_diverging_streamed_run_names_its_step_and_keeps_the_last_finite_state():
    """The replay that finds the first bad step rereads a Dataset's rows, or a loader's epoch from its start
    (exact where its order is reproducible, as with a set_epoch sampler)."""
    params, x = _tiny(seed=3)
    kw = dict(epochs=2, batch_size=B, lr=1e10, seed=0, **QUIET)
    with pytest.raises(vaefunc.NonFiniteLossError) as ref:
        vaefunc.train(params, x, **kw)
    with pytest.raises(vaefunc.NonFiniteLossError) as got:
        vaefunc.train(params, Rows(x), **kw)
    assert (got.value.epoch, got.value.step) == (ref.value.epoch, ref.value.step)
    _same(got.value.params, ref.value.params)

    def loader():
        return DataLoader(TensorDataset(x), batch_size=B, sampler=Epochs())

    with pytest.raises(vaefunc.NonFiniteLossError) as got:
        vaefunc.train(params, loader(), **kw)
    assert got.value.step > 1
    before = vaefunc.train(params, loader(), **kw, should_stop=_stop_after(got.value.step - 1))
    _same(got.value.params, before.params)


# ------------------------------------------------------------------------ bad input


class Endless(IterableDataset):
    def __iter__(self):
        return iter([torch.zeros(D)])


class NoLength:
    def __init__(self, x):
        self.x = x

    def __iter__(self):
        return iter(self.x.split(B))


def _x():
    return S.rand(100, N, D, dtype=torch.float32)


def _with_at(x, i, value):
    x = x.clone()
    x.view(-1)[i] = value
    return x


BAD = {
    "wrong example shape": (lambda: Rows(_x()[:, :15]), {}, ValueError,
                            r"each example must have 16 features to match the params; got shape \(15,\) .* in data\[0\]"),
    "wrong batch shape": (lambda: DataLoader(TensorDataset(_x()[:, :12]), batch_size=B), {}, ValueError,
                          r"with 16 features per example to match the params; got \(16, 12\)"),
    "integer examples": (lambda: Rows((_x() * 255).to(torch.uint8)), {}, TypeError,
                         r"data must be floating point .*got dtype torch.uint8 in data\[0\]"),
    "integer batches": (lambda: [b.long() for b in _x().split(B)], {}, TypeError, r"data must be floating point .*torch.int64"),
    "empty dataset": (lambda: Rows(_x()[:0]), {}, ValueError, r"data is empty: the Dataset has 0 examples"),
    "empty loader": (lambda: DataLoader(TensorDataset(_x()[:0]), batch_size=B), {}, ValueError, r"data is empty: it yields no batches"),
    "batch_size > dataset": (lambda: Rows(_x()[:10]), {}, ValueError,
                             r"batch_size must be at most the number of examples \(10\); got 16"),
    "batch_size > loader": (lambda: DataLoader(TensorDataset(_x()[:10]), batch_size=B), {}, ValueError,
                            r"batch_size must be at most the number of examples \(10\); got 16"),
    "another batch size": (lambda: DataLoader(TensorDataset(_x()), batch_size=32), {}, ValueError,
                           r"the DataLoader's batch_size is 32, train's batch_size 16: vaefunc does not re-batch"),
    "a short batch in a list": (lambda: [_x()[:B], _x()[:8], _x()[:B]], {}, ValueError,
                                r"every batch must hold batch_size=16 examples .*batch 1 holds 8"),
    "labels missing (examples)": (lambda: Rows(_x()), {"n_classes": 3}, ValueError,
                                  r"conditional on 3 classes .* must be an \(x, y\) pair, or pass labels="),
    "labels missing (batches)": (lambda: DataLoader(TensorDataset(_x()), batch_size=B), {"n_classes": 3}, ValueError,
                                 r"conditional on 3 classes: every batch must be an \(x, y\) pair"),
    "labels out of range": (lambda: TensorDataset(_x(), torch.full((N,), 3)), {"n_classes": 3}, ValueError,
                            r"data\[0\]'s label must lie in \[0, 3\); got values in \[3, 3\]"),
    "values above 1 (first example)": (lambda: Rows(_x() * 2), {}, ValueError,
                                       r"data\[0\] must lie in \[0, 1\] for the bernoulli likelihood; got values in"),
    "values above 1 (first batch)": (lambda: list((_x() * 2).split(B)), {}, ValueError,
                                     r"data \(its first batch\) must lie in \[0, 1\] for the bernoulli likelihood"),
    "nan in the first batch": (lambda: list(_with_at(_x(), 2, float("nan")).split(B)), {}, ValueError,
                               r"data \(its first batch\) must be finite; got 1 NaN or inf"),
    "an iterator": (lambda: iter(_x().split(B)), {}, TypeError, r"data is an iterator .* can be read only once"),
    "no length": (lambda: NoLength(_x()), {}, TypeError, r"an iterable of batches needs __len__"),
    "an IterableDataset": (lambda: Endless(), {}, TypeError, r"an IterableDataset yields examples, not batches"),
    "a dict": (lambda: {"x": _x()}, {}, TypeError, r"data must be a torch.Tensor or numpy.ndarray .*got dict"),
    "labels= beside a loader": (lambda: DataLoader(TensorDataset(_x()), batch_size=B), {"labels": True}, ValueError,
                                r"labels= goes with a tensor or a map-style Dataset"),
    "an item that is not x or (x, y)": (lambda: [(b, b, b) for b in _x().split(B)], {}, TypeError,
                                        r"\(its first batch is a tuple of 3 Tensors\)"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_streamed_input_is_rejected_before_any_step(name):
    make, opts, error, match = BAD[name]
    params, _ = _tiny(n_classes=opts.get("n_classes", 0))
    labels = torch.zeros(N, dtype=torch.int64) if opts.get("labels") else None
    steps = []
    with pytest.raises(error, match=match):
        vaefunc.train(params, make(), labels=labels, epochs=1, batch_size=B, should_stop=lambda: steps.append(1),
                      **QUIET)  # fmt: skip
    assert steps == []


def test_own_seeds_of_an_ensemble_need_a_dataset():
    stacked = vaefunc.init_many(2, (D,), latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="2 seeds give each model its own shuffle"):
        vaefunc.train_many(stacked, list(_x().split(B)), seed=[1, 2], epochs=1, batch_size=B, **QUIET)


@pytest.mark.parametrize("make", [lambda x: Rows(x), lambda x: list(x.split(B))], ids=["dataset", "batches"])
def test_a_bad_value_later_in_the_data_stops_at_its_batch(make):
    """Values are checked per batch as they are read: the error names the epoch and step, before that step."""
    params, x = _tiny()
    x = x.float()
    x[N - 1, 0] = 1.5  # the last example: in the last batch of a list, and somewhere in a shuffled epoch
    steps = []
    with pytest.raises(ValueError, match=r"data \(epoch 1, step \d\) must lie in \[0, 1\].*got values in \[.*, 1.5\]"):
        vaefunc.train(params, make(x), epochs=1, batch_size=B, should_stop=lambda: steps.append(1), **QUIET)
    assert len(steps) < N // B


def test_an_iterable_that_runs_short_is_named():
    class Short:
        def __len__(self):
            return 6

        def __iter__(self):
            return iter(_x().split(B)[:4])

    params, _ = _tiny()
    with pytest.raises(ValueError, match=r"the data ran out after 4 batches in epoch 1; an epoch takes 6"):
        vaefunc.train(params, Short(), epochs=1, batch_size=B, **QUIET)


def test_numpy_examples_stream():
    params, x = _tiny()
    arrays = [row.numpy() for row in x]

    class Arrays(Dataset):
        def __len__(self):
            return N

        def __getitem__(self, i):
            return arrays[i]

    kw = dict(epochs=1, batch_size=B, **QUIET)
    _same(vaefunc.train(params, Arrays(), **kw).params, vaefunc.train(params, np.stack(arrays), **kw).params)


# ---------------------------------------------------------------- the command line


def _image_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8), mode="L").save(root / c / f"{i:02d}.png")


def test_the_command_line_streams_a_large_image_folder_as_it_would_train_it_in_memory(tmp_path, monkeypatch, capsys):
    """Over VAEFUNC_STREAM_BYTES the training images are read from disk through a map-style Dataset:
    the same checkpoint as the in-memory run, bit for bit, and a resumed streamed run too."""
    from vaefunc import cli

    _image_folder(tmp_path / "pics")
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", "pics", "--latent-dim", "2", "--hidden", "8", "--batch-size", "8", "--n-classes", "2",
            "--progress", "never"]  # fmt: skip
    assert cli.main([*args, "--epochs", "2", "--out", "runs/memory"]) == 0
    assert "streaming" not in capsys.readouterr().err
    monkeypatch.setenv("VAEFUNC_STREAM_BYTES", "1000")  # the 54 training images decode to 6,480 bytes
    assert cli.main([*args, "--epochs", "2", "--out", "runs/stream"]) == 0
    assert "streaming the 54 training images from disk" in capsys.readouterr().err
    assert cli.main([*args, "--epochs", "1", "--out", "runs/resumed"]) == 0
    assert cli.main(["train", "--out", "runs/resumed", "--resume", "--epochs", "2", "--progress", "never"]) == 0
    ref = vaefunc.load("runs/memory/checkpoint.safetensors").params
    for run in ("stream", "resumed"):
        _same(vaefunc.load(f"runs/{run}/checkpoint.safetensors").params, ref)
