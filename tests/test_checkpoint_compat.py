"""Checkpoints written by vaefunc 0.1 (tests/fixtures, before the model spec) still load, get the
spec their params and config describe, compute what they computed then, and train on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vaefunc

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected-v0.1.json").read_text())
# expected-v0.1.json was computed on one CPU with one thread: another CPU, thread count or torch version
# may sum the matmuls in another order, which moves a float32 ELBO of about -50 nats in its last bits
# (1e-6 relative is about 8 float32 ulps). A wrong reading of the spec (ReLU for tanh, below) moves it by nats.
ACROSS_MACHINES = {"rtol": 1e-6, "atol": 0.0}


def _seeded_inputs():
    """The inputs expected-v0.1.json was computed on (the run's first, then the conv model's)."""
    g = torch.Generator().manual_seed(0)
    run = (torch.rand(4, 64, generator=g, dtype=torch.float64).float(), torch.randn(4, 2, generator=g, dtype=torch.float64).float())
    conv = (torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64).float(), torch.randn(4, 2, generator=g, dtype=torch.float64).float())
    return run, conv  # fmt: skip


def test_a_run_checkpoint_of_v0_1_gets_its_tanh_spec_from_the_config():
    ckpt = vaefunc.load(FIXTURES / "run-v0.1" / "checkpoint.safetensors")
    assert ckpt.model == vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(8,), activation="tanh")
    assert ckpt.state is not None and ckpt.state.epoch == 1 and ckpt.opt_state is not None
    (x, eps), _ = _seeded_inputs()
    got = ckpt.model.elbo(ckpt.params, x, eps)
    torch.testing.assert_close(got, torch.tensor(EXPECTED["run"]), **ACROSS_MACHINES)  # what vaefunc 0.1 computed
    relu = vaefunc.VAE.from_params(ckpt.params)  # negative control: without the config, a ReLU reading
    assert not torch.allclose(relu.elbo(ckpt.params, x, eps), got)


def test_a_conv_checkpoint_of_v0_1_gets_its_whole_spec():
    ckpt = vaefunc.load(FIXTURES / "conv-v0.1.safetensors")
    want = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), n_classes=3,
                       activation="elu", likelihood="gaussian", learn_obs_std="global", prior="mog",
                       prior_components=2)  # fmt: skip
    assert ckpt.model == want
    _, (x, eps) = _seeded_inputs()
    got = ckpt.model.elbo(ckpt.params, x, eps, torch.tensor([0, 1, 2, 0]))
    torch.testing.assert_close(got, torch.tensor(EXPECTED["conv"]), **ACROSS_MACHINES)


def test_a_v0_1_training_state_resumes_under_its_spec():
    ckpt = vaefunc.load(FIXTURES / "conv-v0.1.safetensors")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    more = vaefunc.train(ckpt.params, x, labels=y, model=ckpt.model, resume=ckpt.state, epochs=2, batch_size=8,
                         progress=False, compile=False)  # fmt: skip
    assert len(more.history) == 1 and more.history[0]["epoch"] == 2
    assert int(more.opt_state[0].count) == 2 * 4


def test_the_old_run_directory_holds_the_files_the_cli_reads():
    config = json.loads((FIXTURES / "run-v0.1" / "config.json").read_text())
    assert config["activation"] == "tanh" and "model" not in config  # the flat layout of vaefunc 0.1
    assert (FIXTURES / "run-v0.1-epoch2-params.safetensors").is_file()


@pytest.mark.parametrize("name", ["AdamState", "os:system", "vaefunc.__main__:Whatever"])
def test_only_vaefuncs_own_state_types_are_rebuilt(name, tmp_path):
    """A checkpoint naming any other NamedTuple (a module to import, say) is refused, not imported."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = vaefunc.VAE((4,), latent_dim=1, hidden=())
    params = model.init()
    path = vaefunc.save(tmp_path / "c.safetensors", params, model=model, opt_state=vaefunc.adam(1e-3).init(params))
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    metadata["tree"] = metadata["tree"].replace("vaefunc.optim:AdamState", name)
    save_file(load_file(path), path, metadata=metadata)
    with pytest.raises(vaefunc.CheckpointError, match="only vaefunc's own"):
        vaefunc.load(path)
