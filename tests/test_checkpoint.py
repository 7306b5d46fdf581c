"""vaefunc.save / vaefunc.load: exact round trips, atomic writes, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

import vaefunc
from vaefunc.checkpoint import CheckpointError

CONFIG = {"input_shape": [1, 4, 4], "latent_dim": 3, "hidden": [8], "lr": 1e-3, "note": "tiny"}


def exact_tree(a, b):
    """Same structure (types, keys and their order, fields) and bit-identical tensors."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.device == b.device
        assert_close(a, b, rtol=0, atol=0)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            exact_tree(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            exact_tree(x, y)
    else:
        assert a == b


@pytest.fixture
def data():
    return torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def params():
    return vaefunc.VAE((1, 4, 4), latent_dim=3, hidden=(8,)).init(0)


def interrupted_run(params, data, stop_after: int, epochs: int = 2):
    calls = iter(range(10**6))
    return vaefunc.train(params, data, epochs=epochs, batch_size=8, seed=1, compile=False, progress=False,
                         binarize="dynamic", should_stop=lambda: next(calls) >= stop_after - 1)  # fmt: skip


def test_round_trip_is_exact(tmp_path, params, data):
    result = interrupted_run(params, data, stop_after=7)  # mid-epoch 2: AdamState with real moments
    assert result.interrupted and (result.state.epoch, result.state.step) == (1, 2)
    path = vaefunc.save(tmp_path / "c.safetensors", result.params, config=CONFIG, state=result.state)
    ckpt = vaefunc.load(path)
    exact_tree(ckpt.params, result.params)
    exact_tree(ckpt.opt_state, result.opt_state)
    assert type(ckpt.opt_state[0]) is vaefunc.AdamState
    exact_tree(tuple(ckpt.state), tuple(result.state))
    assert ckpt.config == CONFIG


def test_resume_from_a_checkpoint_is_bit_exact(tmp_path, params, data):
    full = vaefunc.train(params, data, epochs=2, batch_size=8, seed=1, compile=False, progress=False,
                         binarize="dynamic")  # fmt: skip
    part = interrupted_run(params, data, stop_after=7)
    vaefunc.save(tmp_path / "c.safetensors", part.params, state=part.state)
    ckpt = vaefunc.load(tmp_path / "c.safetensors")
    rest = vaefunc.train(ckpt.params, data, epochs=2, batch_size=8, seed=1, compile=False, progress=False,
                         binarize="dynamic", resume=ckpt.state)  # fmt: skip
    exact_tree(rest.params, full.params)
    exact_tree(rest.opt_state, full.opt_state)
    assert rest.history[-1]["loss"] == full.history[-1]["loss"]


def test_fresh_adam_state_and_float64(tmp_path):
    params = vaefunc.VAE((5,), latent_dim=2, hidden=()).init(0, dtype=torch.float64)
    opt_state = vaefunc.adam(1e-3).init(params)  # mu and nu share their zero tensors
    vaefunc.save(tmp_path / "c.safetensors", params, opt_state=opt_state)
    ckpt = vaefunc.load(tmp_path / "c.safetensors")
    exact_tree(ckpt.params, params)
    exact_tree(ckpt.opt_state, opt_state)
    assert ckpt.state is None and ckpt.config is None


def test_keys_are_dotted_and_the_file_is_safetensors(tmp_path, params):
    vaefunc.save(tmp_path / "c.safetensors", params, opt_state=vaefunc.adam(1e-3).init(params))
    keys = set(load_file(tmp_path / "c.safetensors"))
    assert "params.encoder.0.weight" in keys and "opt_state.0.mu.decoder.2.bias" in keys
    assert "opt_state.0.count" in keys and "opt_state.1.lr" in keys


def test_plain_state_dict_loads_as_params(tmp_path, params):
    save_file(params, tmp_path / "sd.safetensors")
    exact_tree(dict(sorted(vaefunc.load(tmp_path / "sd.safetensors").params.items())), dict(sorted(params.items())))


def test_write_is_atomic(tmp_path, params, monkeypatch):
    path = vaefunc.save(tmp_path / "c.safetensors", params)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr("vaefunc._io.os.fsync", crash)
    other = vaefunc.VAE((1, 4, 4), latent_dim=3, hidden=(8,)).init(1)
    with pytest.raises(OSError, match="disk on fire"):
        vaefunc.save(path, other)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary file left


@pytest.mark.parametrize("keep", [0, 5, 8, 60, -1])
def test_truncated(tmp_path, params, keep):
    path = vaefunc.save(tmp_path / "c.safetensors", params, config=CONFIG)
    raw = path.read_bytes()
    path.write_bytes(raw[: keep if keep >= 0 else len(raw) - 1])
    with pytest.raises(CheckpointError, match="truncated checkpoint"):
        vaefunc.load(path)


def test_corrupt_header(tmp_path, params):
    path = vaefunc.save(tmp_path / "c.safetensors", params)
    raw = bytearray(path.read_bytes())
    raw[8:12] = b"!!!!"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        vaefunc.load(path)


def rewrite(path, key, value):
    """Replace one tensor of a checkpoint, keeping its metadata, as a bad tool would."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    tensors[key] = value
    save_file(tensors, path, metadata=metadata)


@pytest.mark.parametrize("n_classes", [0, 3])
def test_the_config_is_checked_against_the_spec_of_a_conv_or_conditional_model(tmp_path, n_classes):
    """hidden, latent_dim and input_shape are read from the spec: a conv model's dense widths, and a
    conditional decoder's latent width without the label's columns."""
    model = vaefunc.VAE((1, 8, 8), latent_dim=3, hidden=(16,), arch="conv", channels=(4,), n_classes=n_classes)
    config = {"input_shape": [1, 8, 8], "latent_dim": 3, "hidden": [16]}
    path = vaefunc.save(tmp_path / "conv.safetensors", model.init(), model=model, config=config)
    assert vaefunc.load(path).config == config
    with pytest.raises(CheckpointError, match=r"hidden \[32\] but the params' hidden layers are \[16\] wide"):
        vaefunc.save(tmp_path / "bad.safetensors", model.init(), model=model, config=config | {"hidden": [32]})
    with pytest.raises(CheckpointError, match=r"latent_dim 4 but the params' latent_dim is 3"):
        vaefunc.save(tmp_path / "bad.safetensors", model.init(), model=model, config=config | {"latent_dim": 4})


def test_shapes_that_do_not_match_the_config(tmp_path, params):
    other = vaefunc.VAE((1, 4, 4), latent_dim=5, hidden=(8,)).init(0)
    path = vaefunc.save(tmp_path / "c.safetensors", params, config=CONFIG)
    for key in ("encoder.2.weight", "encoder.2.bias", "decoder.0.weight"):
        rewrite(path, f"params.{key}", other[key])
    with pytest.raises(CheckpointError, match=r"do not match the config: latent_dim 3 but the params' latent_dim is 5"):
        vaefunc.load(path)


def test_optimizer_state_shape_mismatch(tmp_path, params):
    path = vaefunc.save(tmp_path / "c.safetensors", params, opt_state=vaefunc.adam(1e-3).init(params))
    rewrite(path, "opt_state.0.nu.encoder.0.weight", torch.zeros(2, 2))
    with pytest.raises(CheckpointError, match=r"optimizer state 'encoder.0.weight' is \(2, 2\)"):
        vaefunc.load(path)


def test_malformed_params(tmp_path, params):
    path = vaefunc.save(tmp_path / "c.safetensors", params)
    rewrite(path, "params.encoder.0.bias", torch.zeros(3))
    with pytest.raises(CheckpointError, match="params are malformed"):
        vaefunc.load(path)


def test_save_checks_before_writing(tmp_path, params):
    with pytest.raises(CheckpointError, match="latent_dim 4 but"):
        vaefunc.save(tmp_path / "c.safetensors", params, config={**CONFIG, "latent_dim": 4})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        vaefunc.save(tmp_path / "c.safetensors", params, config={"f": object()})
    assert not (tmp_path / "c.safetensors").exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        vaefunc.load(tmp_path / "none.safetensors")


def test_config_dataclass(tmp_path, params):
    vaefunc.save(tmp_path / "c.safetensors", params, config=vaefunc.TrainConfig(epochs=3))
    assert vaefunc.load(tmp_path / "c.safetensors").config["epochs"] == 3
    meta = json.loads(json.dumps(vaefunc.load(tmp_path / "c.safetensors").config))
    assert meta["compile"] == "auto"


def test_the_config_carries_the_activation_and_an_unknown_one_is_refused(tmp_path, params):
    vaefunc.save(tmp_path / "c.safetensors", params, config=vaefunc.TrainConfig(activation="tanh"))
    assert vaefunc.load(tmp_path / "c.safetensors").config["activation"] == "tanh"
    with pytest.raises(CheckpointError, match=r"activation must be one of \('relu', 'tanh'.*got 'sigmoid'"):
        vaefunc.save(tmp_path / "d.safetensors", params, config={**CONFIG, "activation": "sigmoid"})
    assert not (tmp_path / "d.safetensors").exists()
    path = vaefunc.save(tmp_path / "e.safetensors", params, config=CONFIG)  # an older config, without the field
    assert "activation" not in vaefunc.load(path).config
