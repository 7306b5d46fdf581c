"""Hardening, second pass: inputs nobody listed in the first pass (tests/test_adversarial.py).

Each case is either a clear TypeError/ValueError (CheckpointError, DatasetError; on the command line
exit 2 with one line) from :mod:`vaefunc._check`'s one message style, or a correct result.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vaefunc

MODEL = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))


def _x(n=64, d=16, seed=1):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ 1. silent results


def test_the_on_epoch_state_is_a_copy_that_cannot_edit_the_result():
    seen = []

    def zero(entry, state):
        for v in state.params.values():
            v.zero_()
        seen.append(state)

    result = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=2, batch_size=32, progress=False, on_epoch=zero)
    assert len(seen) == 2
    assert all(bool(v.abs().sum() > 0) for v in result.params.values())
    assert all(bool(v.abs().sum() > 0) for v in result.state.params.values())


@pytest.mark.parametrize(("kw", "match"), [
    ({"per_dim": True}, "per_dim needs a closed-form KL"),
    ({"kl": "closed"}, "kl='closed' needs the standard normal prior"),
    ({"kl": "bogus"}, r"kl must be one of \('auto', 'closed', 'mc'\); got 'bogus'"),
])  # fmt: skip
def test_a_mog_prior_refuses_kl_settings_it_cannot_honour(kw, match):
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,), prior="mog")
    with pytest.raises(ValueError, match=match):
        model.elbo_terms(model.init(), _x(3), torch.randn(3, 2), **kw)


def test_kl_bogus_is_refused_for_the_normal_prior_too():
    with pytest.raises(ValueError, match="kl must be one of"):
        MODEL.elbo(MODEL.init(), _x(3), torch.randn(3, 2), kl="bogus")


def test_unstack_of_one_models_params_is_refused():
    model = vaefunc.VAE((2,), latent_dim=1, hidden=(2,))  # every leaf leads with 2: it looks like m=2
    with pytest.raises(ValueError, match=r"params_stack must be stacked params .*; got one model's params"):
        vaefunc.unstack(model.init())
    members = vaefunc.unstack(vaefunc.init_many(3, model=model))
    assert len(members) == 3 and members[0]["encoder.0.bias"].shape == (2,)


# ------------------------------------------------------------------ 2. models accepted that cannot run


def test_a_conditional_vamp_prior_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"prior='vamp' needs an unconditional model \(n_classes=0\)"):
        vaefunc.VAE((16,), latent_dim=2, hidden=(8,), n_classes=3, prior="vamp")
    with pytest.raises(ValueError, match="prior='vamp' needs an unconditional model"):
        vaefunc.VAE((16,), latent_dim=2, hidden=(8,), n_classes=3, semi_supervised=True, prior="vamp")


def test_semi_supervised_vamp_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    from vaefunc import cli

    code = cli.main(["train", "--data", "digits", "--semi-supervised", "--n-classes", "10", "--prior", "vamp",
                     "--out", str(tmp_path / "run"), "--epochs", "1", "--progress", "never"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "prior='vamp' needs an unconditional model" in err and err.count("\n") == 1, err


def test_nan_params_are_refused_before_the_first_step_not_blamed_on_the_lr():
    params = MODEL.init()
    params["encoder.0.bias"][0] = math.nan
    with pytest.raises(ValueError, match=r"params must be finite; got NaN or inf in 'encoder.0.bias' before training"):
        vaefunc.train(params, _x(), model=MODEL, epochs=1, batch_size=32, progress=False)
    with pytest.raises(ValueError, match="params must be finite"):
        vaefunc.train_many(vaefunc.stack([params, MODEL.init()]), _x(), model=MODEL, epochs=1, batch_size=32,
                           progress=False)  # fmt: skip


def test_a_corrupt_optimizer_state_is_refused_before_the_first_step():
    params = MODEL.init()
    opt_state = vaefunc.adam(1e-3).init(params)
    opt_state[0].nu["decoder.0.weight"][0, 0] = math.inf
    with pytest.raises(ValueError, match=r"opt_state must be finite; got NaN or inf in '0.nu.decoder.0.weight'"):
        vaefunc.train(params, _x(), model=MODEL, epochs=1, batch_size=32, progress=False, opt_state=opt_state)


def test_a_nan_resume_state_is_refused_before_the_first_step():
    state = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=32, progress=False).state
    state.params["decoder.2.bias"][:] = math.nan
    with pytest.raises(ValueError, match="params must be finite"):
        vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=2, batch_size=32, progress=False, resume=state)


# ------------------------------------------------------------------ 3. bounded work on input read from outside


def _quick(fn, seconds=1.0):
    import time

    t0 = time.perf_counter()
    try:
        fn()
    finally:
        assert time.perf_counter() - t0 < seconds, f"took {time.perf_counter() - t0:.2f} s"


def test_a_pickle_of_shared_nested_lists_is_refused_in_under_a_second(tmp_path):
    import gzip
    import pickle

    from vaefunc.data import DatasetError

    node: list = []
    for _ in range(135):  # 2**135 paths through a few hundred bytes
        node = [node, node]
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(node, protocol=2)))
    assert path.stat().st_size < 1000
    with pytest.raises(DatasetError, match="must nest at most 32 deep"):
        _quick(lambda: vaefunc.data.load(path))


def test_a_wide_shared_pickle_is_walked_once_per_object(tmp_path):
    import pickle

    from vaefunc.data import DatasetError

    shared = [np.zeros(2)] * 1000
    path = tmp_path / "mnist.pkl"
    path.write_bytes(pickle.dumps([shared] * 10000, protocol=2))  # 1e7 references to 1 list
    with pytest.raises(DatasetError, match="expected the mnist.pkl.gz layout"):
        _quick(lambda: vaefunc.data.load(path))


def _train_cli(argv, capsys, tmp_path):
    from vaefunc import cli

    code = cli.main(["train", "--out", str(tmp_path / "run"), *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "huge"])
def test_a_config_file_must_be_a_small_regular_file(kind, tmp_path, capsys):
    import os

    path = {"fifo": tmp_path / "c.json", "device": "/dev/zero", "folder": tmp_path, "huge": tmp_path / "c.json"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "huge":
        path.write_text('{"train": {}}' + " " * 2**21)
    code, err = 0, ""
    code, err = _train_cli(["--config", str(path)], capsys, tmp_path)
    want = "must be at most 1048576 bytes" if kind == "huge" else "must be a regular file"
    assert code == 2 and want in err and err.count("\n") == 1, err


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_a_deeply_nested_config_file_is_one_line(suffix, tmp_path, capsys):
    path = tmp_path / f"c{suffix}"
    path.write_text("[" * 100000 + "]" * 100000 if suffix == ".json" else "x = " + "[" * 100000 + "]" * 100000)
    code, err = _train_cli(["--config", str(path)], capsys, tmp_path)
    assert code == 2 and "nested too deeply" in err and err.count("\n") == 1, err


def test_a_config_listing_millions_of_layers_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{"model": {"hidden": [' + ",".join(["1"] * 300000) + "]}}")
    code, err = _train_cli(["--config", str(path)], capsys, tmp_path)
    assert code == 2 and "hidden must have at most 1024 entries; got 300000" in err, err
    with pytest.raises(ValueError, match="hidden must have at most 1024 entries"):
        _quick(lambda: vaefunc.VAE((16,), hidden=(1,) * 3_000_000))


@pytest.mark.parametrize(("argv", "message"), [
    (["--epochs", "99999999999999999999"], "epochs must be an int >= 0 of at most 1000000000"),
    (["--lr-schedule", "iwae-paper:99999999999"], "STAGES must be at most 40"),
])  # fmt: skip
def test_counts_read_from_the_command_line_are_capped(argv, message, tmp_path, capsys):
    try:
        code, err = _train_cli(argv, capsys, tmp_path)
    except SystemExit as e:
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and message in err, err


def test_the_schedule_caps_are_stated():
    with pytest.raises(ValueError, match="stages must be a positive int of at most 40"):
        vaefunc.iwae_paper_lr(10, stages=2**40)
    with pytest.raises(ValueError, match="epochs must be an int >= 0 of at most 1000000000"):
        vaefunc.TrainConfig(epochs=2**64)
    assert vaefunc.iwae_paper_lr(10, stages=40)(torch.tensor(0)).item() == pytest.approx(1e-3)


def test_deeply_nested_checkpoint_metadata_is_a_checkpoint_error(tmp_path):
    from safetensors.torch import save_file

    from vaefunc.checkpoint import CheckpointError

    path = tmp_path / "c.safetensors"
    save_file({"params.x": torch.zeros(1)}, path, metadata={"format": "vaefunc.checkpoint", "version": "1",
                                                           "tree": "[" * 100000, "config": "null"})  # fmt: skip
    with pytest.raises(CheckpointError, match="nested too deeply"):
        vaefunc.load(path)


def test_a_deeply_nested_metrics_line_is_one_line(tmp_path, capsys, monkeypatch):
    from vaefunc import cli

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--data", "digits", "--limit", "200", "--hidden", "8", "--latent-dim", "2", "--batch-size", "32",
            "--progress", "never", "--out", "run"]  # fmt: skip
    assert cli.main([*argv, "--epochs", "1"]) == 0
    path = tmp_path / "run" / "metrics.jsonl"
    path.write_text("[" * 100000 + "\n" + path.read_text())
    capsys.readouterr()
    assert cli.main([*argv, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "line 1 is corrupt (nested too deeply to parse)" in err and err.count("\n") == 1, err


# ------------------------------------------------------------------ 4. settings silently accepted


def _train(**kw):
    kw = {"model": MODEL, "epochs": 1, "batch_size": 32, "progress": False} | kw
    return vaefunc.train(MODEL.init(), _x(), **kw)


@pytest.mark.skipif(torch.cuda.device_count() >= 100, reason="a machine with 100 GPUs")
def test_a_device_this_machine_lacks_is_refused_when_the_run_starts():
    config = vaefunc.TrainConfig(device="cuda:99")  # a config may be written on another machine
    with pytest.raises(ValueError, match=r"device must be a device this machine has; got 'cuda:99'"):
        _train(config=config.replace(epochs=1, batch_size=32))


def test_numpy_ints_are_ints_and_arrays_of_seeds_are_for_ensembles():
    config = vaefunc.TrainConfig(batch_size=np.uint8(16), epochs=np.int64(1))
    assert type(config.batch_size) is int and type(config.epochs) is int and config.batch_size == 16
    assert _train(batch_size=np.uint8(16)).state.epoch == 1
    with pytest.raises(ValueError, match="train takes one seed; got 2"):
        _train(seed=np.array([1, 2]))
    with pytest.raises(ValueError, match="train takes one beta; got 2"):
        _train(beta=(1.0, 2.0))


@pytest.mark.parametrize("kw", [{"lr": 5e-3}, {"lr_schedule": "iwae-paper"}, {"adam_b1": 0.5}])
def test_settings_that_a_given_optimizer_would_ignore_are_refused(kw):
    optimizer = vaefunc.sgd(1e-3) if "adam_b1" in kw else vaefunc.adam(1e-3)
    with pytest.raises(ValueError, match=f"optimizer= holds its own learning rate and settings, so {next(iter(kw))}="):
        _train(optimizer=optimizer, **kw)
    assert _train(optimizer=optimizer).state.epoch == 1


@pytest.mark.parametrize(("kw", "match"), [
    ({"k": -1}, "k must be a positive int"),
    ({"chunk": -5}, "chunk must be a positive int"),
    ({"progress": "bogus"}, "progress must be True, False or 'always'"),
    ({"seed": -1}, "seed must be an int >= 0"),
])  # fmt: skip
def test_anomaly_score_checks_every_argument_whichever_score_reads_it(kw, match):
    with pytest.raises(ValueError, match=match):
        vaefunc.metrics.anomaly_score(MODEL.init(), _x(4), score="recon", model=MODEL, **kw)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: vaefunc.optim.scale_by_adam(b1=2), r"b1 must be in \[0, 1\); got 2"),
    (lambda: vaefunc.optim.scale_by_adam(b2=math.nan), "b2 must be a finite number"),
    (lambda: vaefunc.optim.scale_by_adam(eps=-1), "eps must be >= 0; got -1"),
    (lambda: vaefunc.optim.clip_by_global_norm(-1), "max_norm must be a finite number > 0"),
    (lambda: vaefunc.adam(1e-3, b1="0.9"), "b1 must be a finite number"),
])  # fmt: skip
def test_optimizer_hyperparameters_are_checked(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_should_stop_must_return_a_bool():
    with pytest.raises(TypeError, match="should_stop must return True or False; got 'no'"):
        _train(should_stop=lambda: "no")
    assert _train(should_stop=lambda: np.bool_(False)).state.epoch == 1
    assert _train(should_stop=lambda: None).state.epoch == 1  # a callback that only counts


# ------------------------------------------------------------------ 5. params of another model

WIDER = vaefunc.VAE((16,), latent_dim=2, hidden=(9,))
LATENT3 = vaefunc.VAE((16,), latent_dim=3, hidden=(8,))


@pytest.mark.parametrize("other", [WIDER, LATENT3], ids=["width", "latent"])
@pytest.mark.parametrize("call", [
    lambda p: MODEL.encode(p, _x(4)),
    lambda p: MODEL.code(p, _x(4)),
    lambda p: MODEL.decode(p, torch.zeros(4, 2)),
    lambda p: MODEL.elbo(p, _x(4), torch.zeros(4, 2)),
    lambda p: MODEL.sample(p, 4),
    lambda p: vaefunc.metrics.anomaly_score(p, _x(4), score="recon", model=MODEL),
    lambda p: vaefunc.augment(p, model=MODEL, x=_x(4)),
], ids=["encode", "code", "decode", "elbo", "sample", "anomaly_score", "augment"])  # fmt: skip
def test_params_of_another_model_are_refused(call, other):
    with pytest.raises(ValueError, match=r"params .* must have shape|params 'encoder"):
        call(other.init())


def test_the_spec_methods_still_run_under_vmap_and_compile_with_the_check():
    params = vaefunc.stack([MODEL.init(0), MODEL.init(1)])
    x = _x(4)
    mu, _ = torch.func.vmap(lambda p: MODEL.encode(p, x))(params)
    assert mu.shape == (2, 4, 2)
    torch.testing.assert_close(mu[1], MODEL.encode(MODEL.init(1), x)[0])
    compiled = torch.compile(lambda p, x: MODEL.elbo(p, x, torch.zeros(4, 2)), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(MODEL.init(), x), MODEL.elbo(MODEL.init(), x, torch.zeros(4, 2)))


def test_a_label_out_of_range_is_refused_not_an_all_zero_row():
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,), n_classes=3)
    params = model.init()
    for call in (lambda y: model.encode(params, _x(4), y), lambda y: model.decode(params, torch.zeros(4, 2), y),
                 lambda y: model.elbo(params, _x(4), torch.zeros(4, 2), y)):  # fmt: skip
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\); got values in \[7, 7\]"):
            call(torch.full((4,), 7))
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            call(torch.full((4,), -1))
        call(torch.tensor([0, 1, 2, 0]))


# ------------------------------------------------------------------ 6. checkpoints and resume


def _saved(tmp_path):
    result = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=32, progress=False)
    return vaefunc.save(tmp_path / "c.safetensors", result.params, model=MODEL, state=result.state), result


def _rewrite(path, edit_metadata=None, edit_tensors=None):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if edit_metadata:
        tree = json.loads(metadata["tree"])
        edit_metadata(metadata, tree)
        metadata["tree"] = json.dumps(tree)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, path, metadata=metadata)


def _state_value(name, value):
    def edit(metadata, tree):
        tree["state"]["dict"] = [[k, {"value": value} if k == name else v] for k, v in tree["state"]["dict"]]
    return edit


def _drop_stream(metadata, tree):
    for entry in tree["state"]["dict"]:
        if entry[0] == "rng":
            entry[1]["dict"] = [kv for kv in entry[1]["dict"] if kv[0] != "noise"]


@pytest.mark.parametrize(("edit", "match"), [
    (lambda m, t: m.update(version="-1"), "the format version must be an int >= 1; got '-1'"),
    (lambda m, t: m.update(version="one"), "the format version must be an int >= 1"),
    (_state_value("epoch", 1e300), "epoch must be an int in"),
    (_state_value("epoch", -3), "epoch must be an int in"),
    (_state_value("step", True), "step must be an int >= 0; got True"),
    (_drop_stream, r"rng must hold the generator states \['binarize', 'data', 'noise'\]"),
])  # fmt: skip
def test_load_refuses_a_state_train_could_not_resume(edit, match, tmp_path):
    path, _ = _saved(tmp_path)
    _rewrite(path, edit_metadata=edit)
    with pytest.raises(vaefunc.CheckpointError, match=match):
        vaefunc.load(path)


def test_nan_params_load_only_when_asked(tmp_path):
    path, _ = _saved(tmp_path)
    _rewrite(path, edit_tensors=lambda t: t["params.decoder.0.bias"].fill_(math.nan))
    with pytest.raises(vaefunc.CheckpointError, match=r"params must be finite; got NaN or inf in 'decoder.0.bias'"):
        vaefunc.load(path)
    assert torch.isnan(vaefunc.load(path, allow_nonfinite=True).params["decoder.0.bias"]).all()


@pytest.mark.parametrize(("change", "match"), [
    ({"epoch": -3}, "epoch must be an int in"),
    ({"sums": "x"}, "sums must be a floating-point tensor"),
    ({"step": 1.5}, "step must be an int >= 0"),
])  # fmt: skip
def test_save_refuses_what_load_would_refuse(change, match, tmp_path):
    _, result = _saved(tmp_path)
    with pytest.raises(ValueError, match=match):
        vaefunc.save(tmp_path / "d.safetensors", result.params, model=MODEL, state=result.state._replace(**change))
    params = {k: v.clone() for k, v in result.params.items()}
    params["encoder.0.weight"][0, 0] = math.inf
    with pytest.raises(ValueError, match="params must be finite"):
        vaefunc.save(tmp_path / "d.safetensors", params, model=MODEL)
    vaefunc.save(tmp_path / "d.safetensors", params, model=MODEL, allow_nonfinite=True)


def test_resume_without_an_optimizer_state_is_refused(tmp_path):
    _, result = _saved(tmp_path)
    with pytest.raises(ValueError, match="resume.opt_state is None"):
        vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=2, batch_size=32, progress=False,
                      resume=result.state._replace(opt_state=None))  # fmt: skip


def test_resume_with_a_stream_missing_is_refused():
    state = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=32, progress=False).state
    state = state._replace(rng={k: v for k, v in state.rng.items() if k != "noise"})
    with pytest.raises(ValueError, match="resume: rng must hold the generator states"):
        vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=2, batch_size=32, progress=False, resume=state)


def test_eval_of_a_nan_checkpoint_is_a_clear_error_not_bare_nan_json(tmp_path, capsys, monkeypatch):
    from vaefunc import cli

    monkeypatch.chdir(tmp_path)
    argv = ["--data", "digits", "--limit", "200", "--hidden", "8", "--latent-dim", "2", "--batch-size", "32",
            "--progress", "never"]  # fmt: skip
    assert cli.main(["train", *argv, "--epochs", "1", "--out", "run"]) == 0
    _rewrite(tmp_path / "run" / "checkpoint.safetensors", edit_tensors=lambda t: t["params.decoder.0.bias"].fill_(math.nan))
    capsys.readouterr()
    code = cli.main(["eval", "run", "--json", "--k", "0"])
    out, err = capsys.readouterr()
    assert code != 0 and "NaN" not in out and "params must be finite" in err and err.count("\n") == 1, (out, err)


# ------------------------------------------------------------------ 7. data


def test_a_conv_model_refuses_data_of_another_image_shape():
    conv = vaefunc.VAE((1, 8, 8), latent_dim=2, arch="conv", channels=(4,))
    kw = {"model": conv, "epochs": 1, "batch_size": 32, "progress": False}
    with pytest.raises(ValueError, match=r"data must have shape \(n, 1, 8, 8\) or flat \(n, 64\)"):
        vaefunc.train(conv.init(), torch.rand(64, 2, 32), **kw)
    assert vaefunc.train(conv.init(), torch.rand(64, 64), **kw).state.epoch == 1
    assert vaefunc.train(conv.init(), torch.rand(64, 1, 8, 8), **kw).state.epoch == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_data_just_over_one_is_refused(dtype):
    x = _x().to(dtype)
    x[0, 0] = 1.0000001
    model = MODEL if dtype == torch.float32 else vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"data must lie in \[0, 1\] for the Bernoulli likelihood"):
        vaefunc.train(model.init(dtype=dtype), x, model=model, epochs=1, batch_size=32, progress=False)


def test_npz_files_with_negative_labels_duplicates_or_both_layouts_are_refused(tmp_path):
    import zipfile

    from vaefunc.data import DatasetError

    x = np.random.default_rng(0).random((4, 16), dtype=np.float32)
    np.savez(tmp_path / "neg.npz", x=x, y=np.array([-1, 0, 1, 2]))
    with pytest.raises(DatasetError, match=r"labels must be class indices >= 0 .*got values in \[-1, 2\]"):
        vaefunc.data.load(tmp_path / "neg.npz", split="all")
    np.savez(tmp_path / "both.npz", x=x, x_train=x, x_test=x)
    with pytest.raises(DatasetError, match="holds both layouts"):
        vaefunc.data.load(tmp_path / "both.npz")
    np.savez(tmp_path / "dup.npz", x=x)
    with zipfile.ZipFile(tmp_path / "dup.npz", "a") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("x.npy", (tmp_path / "neg.npz").read_bytes()[:10])
    with pytest.raises(DatasetError, match=r"must name each array once; got \['x.npy'\]"):
        vaefunc.data.load(tmp_path / "dup.npz")
    np.savez(tmp_path / "ok.npz", x=x, y=np.array([3, 0, 1, 2]))
    assert vaefunc.data.load(tmp_path / "ok.npz", split="all").labels.tolist() == [3, 0, 1, 2]


# ------------------------------------------------------------------ 8. runs that cannot lie

TINY = ["--data", "digits", "--limit", "200", "--hidden", "8", "--latent-dim", "2", "--batch-size", "32",
        "--progress", "never"]  # fmt: skip


def _cli(argv, capsys):
    from vaefunc import cli

    capsys.readouterr()
    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_two_trains_started_at_once_on_one_folder_do_not_both_run(tmp_path):
    """The issue's race: `vaefunc train --out X &` and, 0.2 s later, another; one trains, the other exits 2."""
    import json
    import os
    import subprocess
    import sys
    import time

    root = str(Path(vaefunc.__file__).parents[1])  # this copy of vaefunc, in the subprocesses too
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "vaefunc", "train", *TINY, "--epochs", "2", "--out", str(tmp_path / "X")]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)
    second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    codes = [first.returncode, second.returncode]
    assert sorted(codes) == [0, 2], (codes, outs)
    err = outs[codes.index(2)][1]
    assert ("is in use by vaefunc (pid" in err or "already holds a run" in err) and err.count("\n") == 1, err
    rows = (tmp_path / "X" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


def test_the_run_folder_is_locked_before_its_data_is_read(tmp_path, capsys, monkeypatch):
    from vaefunc.cli import datasets, rundir

    real, seen = datasets.load, []

    def load(*args, **kw):
        with pytest.raises(vaefunc.cli.UsageError, match="is in use by vaefunc"):
            rundir.Lock(tmp_path / "run")
        seen.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(datasets, "load", load)
    code, err = _cli(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert code == 0 and seen, err


def test_a_refused_data_file_leaves_no_folder_behind(tmp_path, capsys):
    code, err = _cli(["train", "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "a" / "run")], capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "a").exists(), err


def test_numbered_run_folders_are_claimed_not_shared(tmp_path, capsys, monkeypatch):
    from vaefunc.cli import rundir

    monkeypatch.chdir(tmp_path)
    with rundir.Lock(Path("runs/digits")):  # another command took runs/digits, and has not written yet
        code, err = _cli(["train", *TINY, "--epochs", "0"], capsys)
    assert code == 0 and (tmp_path / "runs" / "digits-2" / "checkpoint.safetensors").is_file(), err
    assert not (tmp_path / "runs" / "digits" / "checkpoint.safetensors").exists()


@pytest.fixture
def two_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _cli(["train", *TINY, "--epochs", "1", "--out", "plain"], capsys)[0] == 0
    assert _cli(["train", *TINY, "--epochs", "1", "--out", "semi", "--semi-supervised", "--n-classes", "10"],
                capsys)[0] == 0  # fmt: skip
    return tmp_path / "plain", tmp_path / "semi"


def _drop_run_id(run):
    import json

    config = json.loads((run / "config.json").read_text())
    del config["run_id"]
    (run / "config.json").write_text(json.dumps(config))

    def edit(metadata, tree):
        saved = json.loads(metadata["config"])
        del saved["run_id"]
        metadata["config"] = json.dumps(saved)

    _rewrite(run / "checkpoint.safetensors", edit_metadata=edit)


def test_a_checkpoint_copied_from_another_run_is_refused(two_runs, capsys):
    import shutil

    plain, semi = two_runs
    shutil.copy(semi / "checkpoint.safetensors", plain / "checkpoint.safetensors")
    code, err = _cli(["train", "--out", str(plain), "--resume", "--epochs", "2"], capsys)
    assert code == 2 and "is not this folder's run: its run id" in err and err.count("\n") == 1, err
    _drop_run_id(plain)  # runs of older vaefunc carry no id: the spec and settings are compared
    code, err = _cli(["train", "--out", str(plain), "--resume", "--epochs", "2"], capsys)
    assert code == 2 and "is not this folder's run: model n_classes 0 in config.json, 10 in the checkpoint" in err, err
    assert len((plain / "metrics.jsonl").read_text().splitlines()) == 1  # nothing mixed in


def test_a_run_without_an_id_resumes_and_gets_one(two_runs, capsys):
    import json

    plain, _ = two_runs
    _drop_run_id(plain)
    code, err = _cli(["train", "--out", str(plain), "--resume", "--epochs", "2"], capsys)
    assert code == 0, err
    run_id = json.loads((plain / "config.json").read_text())["run_id"]
    assert vaefunc.load(plain / "checkpoint.safetensors").config["run_id"] == run_id


def test_settings_contradicting_config_json_are_refused(two_runs, capsys):
    import json

    plain, _ = two_runs
    config = json.loads((plain / "config.json").read_text())
    config["train"]["lr"] = 0.5
    (plain / "config.json").write_text(json.dumps(config))
    code, err = _cli(["train", "--out", str(plain), "--resume", "--epochs", "2"], capsys)
    assert code == 2 and "is not this folder's run: lr 0.5 in config.json, 0.001 in the checkpoint" in err, err


def test_a_mid_epoch_state_resumes_only_at_its_batch_size(tmp_path):
    calls = []
    stop = lambda: len(calls.append(1) or calls) >= 3  # noqa: E731  (stop after 3 steps)
    result = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=8, progress=False, should_stop=stop)
    assert result.interrupted and (result.state.step, result.state.batch_size) == (3, 8)
    state = vaefunc.load(vaefunc.save(tmp_path / "c.safetensors", result.params, model=MODEL,
                                      state=result.state)).state  # fmt: skip
    assert state.batch_size == 8
    with pytest.raises(ValueError, match=r"resume is at step 3 of epoch 1 of a run at batch_size=8; this run's "
                                         r"batch_size is 16"):  # fmt: skip
        vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=16, progress=False, resume=state)
    done = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=8, progress=False, resume=state)
    whole = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=8, progress=False)
    for k in whole.params:  # bit for bit
        torch.testing.assert_close(done.params[k], whole.params[k], rtol=0, atol=0)
    at_the_end = done.state  # an epoch's end (step 0) may go on at another batch size
    assert vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=2, batch_size=16, progress=False,
                         resume=at_the_end).state.epoch == 2  # fmt: skip
    legacy = state._replace(batch_size=None)  # a state from older vaefunc records none: not checked
    vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=8, progress=False, resume=legacy)


def test_a_mid_epoch_checkpoint_at_another_batch_size_is_refused_on_the_command_line(two_runs, capsys):
    import json

    plain, _ = two_runs
    _rewrite(plain / "checkpoint.safetensors", edit_metadata=_state_value("step", 2))
    config = json.loads((plain / "config.json").read_text())
    config["train"]["batch_size"] = 16
    (plain / "config.json").write_text(json.dumps(config))
    code, err = _cli(["train", "--out", str(plain), "--resume", "--epochs", "2"], capsys)
    assert code == 2 and "batch_size 16 in config.json, 32 in the checkpoint" in err, err
    config["train"]["batch_size"] = 32
    (plain / "config.json").write_text(json.dumps(config))
    code, err = _cli(["train", "--out", str(plain), "--resume", "--epochs", "2", "--batch-size", "16"], capsys)
    assert code == 2 and "--batch-size 16 differs from the run's" in err, err


# ------------------------------------------------------------------ 9. OS errors on the command line


def test_a_path_component_over_255_characters_is_one_line(tmp_path, capsys):
    code, err = _cli(["train", *TINY, "--out", str(tmp_path / ("x" * 300))], capsys)
    assert code == 2 and "File name too long" in err and "x" * 300 in err and err.count("\n") == 1, err
    code, err = _cli(["eval", str(tmp_path / ("x" * 300))], capsys)
    assert code == 2 and "File name too long" in err and err.count("\n") == 1, err


def test_a_dangling_out_symlink_is_one_line(tmp_path, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    code, err = _cli(["train", *TINY, "--out", str(tmp_path / "link")], capsys)
    assert code == 2 and "is a symlink to" in err and "which does not exist" in err and err.count("\n") == 1, err


def test_a_lock_that_is_a_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "run" / ".lock").mkdir(parents=True)
    code, err = _cli(["train", *TINY, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and ".lock: Is a directory" in err and err.count("\n") == 1, err


def test_a_full_disk_during_training_is_one_line_and_the_checkpoint_survives(tmp_path, capsys, monkeypatch):
    import errno

    from vaefunc import _io

    monkeypatch.chdir(tmp_path)
    assert _cli(["train", *TINY, "--epochs", "1", "--out", "run"], capsys)[0] == 0
    before = (tmp_path / "run" / "checkpoint.safetensors").read_bytes()

    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io, "_write", full)
    code, err = _cli(["train", "--out", "run", "--resume", "--epochs", "2"], capsys)
    assert code == 1 and "No space left on device (errno 28)" in err and err.count("\n") == 1, err
    assert "run/" in err  # the file it could not write
    assert (tmp_path / "run" / "checkpoint.safetensors").read_bytes() == before  # atomic: the old one is whole
    assert not list((tmp_path / "run").glob(".*.tmp"))


# ------------------------------------------------------------------ 10. IDX headers


def _idx(tmp_path, header: bytes, body: bytes = b"\0" * 64):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(header + body)
    return path


@pytest.mark.parametrize(("header", "ndim", "match"), [
    (bytes([0, 0, 0x07, 3]) + (2).to_bytes(4, "big") * 3, 3, r"unknown IDX type code 0x07 .*expected one of 0x08 \(uint8\)"),
    (bytes([0, 0, 0x08, 3]) + (2**32 - 1).to_bytes(4, "big") * 3, 3,
     r"corrupt IDX header: its dims \(4294967295, 4294967295, 4294967295\) ask for 7922816245"),
    (bytes([0, 0, 0x08, 2]) + (2**32 - 1).to_bytes(4, "big") * 2, None, "far more than the file's"),
    (bytes([0, 0, 0x08, 255]) + (1).to_bytes(4, "big") * 255, None, "an IDX file of 255 dimensions; vaefunc reads at most 8"),
    (bytes([0, 0, 0x08, 255]), 3, r"wrong magic number 0x000008ff for an IDX images file; expected 0x00000803"),
])  # fmt: skip
def test_bad_idx_headers_are_dataset_errors(header, ndim, match, tmp_path):
    from vaefunc.data import DatasetError
    from vaefunc.data.idx import read_idx

    path = _idx(tmp_path, header)
    with pytest.raises(DatasetError, match=match):
        _quick(lambda: read_idx(path, ndim=ndim))
    if ndim == 3:
        with pytest.raises(DatasetError, match=match):
            vaefunc.data.load(path)


# ------------------------------------------------------------------ 11. the rest of the examples


@pytest.mark.parametrize(("call", "match"), [
    (lambda p: MODEL.encode(p, _x(4).double()), "x must have the params' dtype torch.float32; got torch.float64"),
    (lambda p: MODEL.encode(p, _x(4, d=15)),
     r"x: expected examples with 16 features in total; got a tensor of shape \(4, 15\)"),
    (lambda p: MODEL.encode(p, torch.tensor(0.5)), r"x must have shape \(\.\.\., 16\) for this model; got \(\)"),
    (lambda p: MODEL.decode(p, torch.tensor(0.5)), r"z must have shape \(\.\.\., 2\) \(latent_dim=2\); got \(\)"),
    (lambda p: MODEL.decode(p, torch.zeros(4, 3)), r"z must have shape \(\.\.\., 2\)"),
    (lambda p: MODEL.elbo(p, _x(4), torch.zeros(4, 2), beta=torch.ones(4, 4)), "beta of shape"),
    (lambda p: MODEL.elbo(p, _x(4), torch.zeros(4, 2), beta=None), "beta must be a finite number"),
    (lambda p: vaefunc.kl_normal(torch.zeros(4, 2), torch.zeros(4, 3)), r"mu of shape \(4, 2\) must broadcast"),
    (lambda p: vaefunc.kl_normal("mu", torch.zeros(4, 2)), "mu must be a floating-point torch.Tensor"),
])  # fmt: skip
def test_spec_methods_given_a_wrong_dtype_width_or_0d_tensor_name_it(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call(MODEL.init())


def test_an_empty_batch_is_a_valid_input():
    params, empty = MODEL.init(), _x(0)
    assert MODEL.log_likelihood(params, empty, k=4, progress=False).shape == (0,)
    for score in ("nll", "recon", "elbo"):
        assert vaefunc.anomaly_score(params, empty, score=score, k=4, model=MODEL, progress=False).shape == (0,)


def test_numpy_uint64_labels_are_labels():
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,), n_classes=3)
    params, y = model.init(), np.array([0, 1, 2, 0], dtype=np.uint64)
    torch.testing.assert_close(model.encode(params, _x(4), torch.from_numpy(y))[0],
                               model.encode(params, _x(4), torch.from_numpy(y.astype(np.int64)))[0])  # fmt: skip
    assert model.log_likelihood(params, _x(4), labels=y, k=2, progress=False).shape == (4,)
    result = vaefunc.train(params, _x(), labels=np.tile(y, 16), model=model, epochs=1, batch_size=32, progress=False)
    assert result.state.epoch == 1
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model.encode(params, _x(1), torch.from_numpy(np.array([2**63 + 5], dtype=np.uint64)))


def test_a_state_with_numpy_ints_resumes():
    state = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=32, progress=False).state
    state = state._replace(epoch=np.int64(state.epoch), step=np.int64(0))
    assert vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=2, batch_size=32, progress=False,
                         resume=state).state.epoch == 2  # fmt: skip


@pytest.mark.parametrize(("model", "part"), [
    (vaefunc.VAE((16,), latent_dim=2, hidden=(8,), prior="mog"), "prior."),
    (vaefunc.VAE((16,), latent_dim=2, hidden=(8,), likelihood="gaussian", learn_obs_std="global"), "likelihood."),
], ids=["prior", "likelihood"])  # fmt: skip
def test_params_missing_a_prior_or_likelihood_key_are_a_clear_error_not_a_key_error(model, part):
    params = {k: v for k, v in model.init().items() if not k.startswith(part)}
    with pytest.raises(ValueError, match=rf"params is missing \['{part}"):
        model.elbo(params, _x(3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=rf"params is missing '{part}|params is missing \['{part}"):
        model.log_likelihood(params, _x(3), k=2, progress=False)


def test_a_toml_config_of_three_million_layers_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nhidden = [" + ", ".join(["1"] * 3_000_000) + "]\n")
    code, err = _cli(["train", "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "must be at most 1048576 bytes" in err and err.count("\n") == 1, err
