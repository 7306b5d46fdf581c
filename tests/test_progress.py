"""progress= on the long evaluations: a bar on stderr when asked (or when it is a terminal), the same numbers
either way, quiet under pytest (stderr is not a terminal), and ``vaefunc eval`` prints its ELBO before the NLL."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import vaefunc
from vaefunc import cli, estimators, metrics

MODEL = vaefunc.VAE((1, 4, 4), latent_dim=2, hidden=(8,))
PARAMS = MODEL.init(seed=0)
X = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def _log_likelihood(progress):
    return MODEL.log_likelihood(PARAMS, X, k=12, chunk=5, batch_size=7, progress=progress)


def _dataset_elbo(progress):
    return torch.tensor(list(metrics.dataset_elbo(PARAMS, X, batch_size=7, model=MODEL, progress=progress).values()))


CALLS = {  # name -> (call, what its bar says)
    "log_likelihood": (_log_likelihood, "log p(x)"),
    "elbo_per_example": (lambda p: torch.stack(metrics.elbo_per_example(PARAMS, X, batch_size=7, model=MODEL,
                                                                        progress=p)), "ELBO"),  # fmt: skip
    "dataset_elbo": (_dataset_elbo, "ELBO"),
    "encoder_means": (lambda p: metrics.encoder_means(PARAMS, X, batch_size=7, model=MODEL, progress=p),
                      "encoder means"),  # fmt: skip
    "kl_per_dim": (lambda p: metrics.kl_per_dim(PARAMS, X, batch_size=7, model=MODEL, progress=p), "KL per dimension"),
    "active_units": (lambda p: torch.tensor(metrics.active_units(PARAMS, X, model=MODEL, progress=p)),
                     "encoder means"),  # fmt: skip
    "VAE.log_likelihood": (lambda p: MODEL.log_likelihood(PARAMS, X, k=12, chunk=5, batch_size=7, progress=p),
                           "log p(x)"),  # fmt: skip
    "anomaly_score": (lambda p: vaefunc.anomaly_score(PARAMS, X, k=12, chunk=5, model=MODEL, progress=p), "log p(x)"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_bar_when_asked_and_the_same_numbers(name, capsys, monkeypatch):
    call, desc = CALLS[name]
    quiet = call(False)
    assert capsys.readouterr().err == ""
    exact(call(True), quiet)  # stderr is not a terminal under pytest: no bar
    assert capsys.readouterr().err == ""
    exact(call("always"), quiet)
    assert desc in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: True shows it
    exact(call(True), quiet)
    assert desc in capsys.readouterr().err


def test_the_log_likelihood_bar_counts_importance_samples(capsys):
    _log_likelihood("always")
    err = capsys.readouterr().err
    assert "/360 " in err and "sample/s" in err  # 30 examples x k = 12


def test_the_spec_method_stays_quiet_off_a_terminal(capsys):
    exact(MODEL.log_likelihood(PARAMS, X, k=12, chunk=5, batch_size=7), _log_likelihood(False))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", ["yes", 1, None, "auto"])
def test_a_bad_progress_value_is_refused_before_any_work(bad):
    for name, (call, _) in CALLS.items():
        with pytest.raises(ValueError, match="progress must be True, False or 'always'"):
            call(bad)


def test_eval_prints_the_elbo_before_it_starts_the_nll(tmp_path, capsys, monkeypatch):
    model = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    vaefunc.save(tmp_path / "m.safetensors", model.init(seed=0), model=model)
    seen = {}
    real = estimators.estimate_log_likelihood

    def spy(*args, **kwargs):
        seen["stdout"], seen["progress"] = capsys.readouterr().out, kwargs["progress"]
        return real(*args, **kwargs)

    monkeypatch.setattr(estimators, "estimate_log_likelihood", spy)
    argv = ["eval", str(tmp_path / "m.safetensors"), "--data", "digits", "--k", "4"]
    assert cli.main([*argv, "--progress", "always"]) == 0
    assert seen["stdout"].startswith("test ELBO") and seen["progress"] == "always"
    out, err = capsys.readouterr()
    assert out.startswith("test NLL") and "log p(x)" in err
    assert cli.main([*argv, "--json"]) == 0  # one JSON object, printed at the end; no bar off a terminal
    assert seen["stdout"] == "" and seen["progress"] is True
    out, err = capsys.readouterr()
    assert "nll" in json.loads(out) and err == ""


# ---------------------------------------------------------------- off a terminal: plain lines

@pytest.fixture
def every_update(monkeypatch):
    """A plain line at every update instead of every 10 s."""
    from vaefunc import _progress

    monkeypatch.setattr(_progress, "EVERY", 0.0)


def test_library_calls_stay_quiet_off_a_terminal_outside_a_command(every_update, capsys):
    _log_likelihood(True)
    vaefunc.train(PARAMS, X, model=MODEL, epochs=1, batch_size=10, progress=True)
    assert capsys.readouterr().err == ""


def test_a_command_off_a_terminal_prints_a_plain_line_at_least_every_10_s(every_update, capsys):
    from vaefunc import _progress

    with _progress.plain_lines("vaefunc demo"):
        _log_likelihood(True)  # progress=True: lines
        _log_likelihood(False)  # progress=False: nothing
        vaefunc.train(PARAMS, X, model=MODEL, epochs=1, batch_size=10, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("vaefunc demo: log p(x) ") and "/360 samples (" in lines[0] and "samples/s" in lines[0]
    assert lines[-1].startswith("vaefunc demo: training 30/30 examples (100%), ")
    assert sum(line.startswith("vaefunc demo: training ") for line in lines) == 3  # a line per step here
    assert all(line.startswith(("vaefunc demo: log p(x) ", "vaefunc demo: training ")) for line in lines)
    assert _progress.EVERY == 0.0 and _progress.Lines(1, unit="ex", desc="x", every=None).every == 0.0


def test_eval_off_a_terminal_says_how_far_the_nll_is(tmp_path, every_update, capsys):
    model = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    vaefunc.save(tmp_path / "m.safetensors", model.init(seed=0), model=model)
    argv = ["eval", str(tmp_path / "m.safetensors"), "--data", "digits", "--k", "4"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "vaefunc eval: log p(x) " in err and "samples/s" in err
    assert cli.main([*argv, "--progress", "never"]) == 0
    assert capsys.readouterr().err == ""


def test_train_off_a_terminal_says_how_far_the_epoch_is(tmp_path, every_update, capsys):
    argv = ["train", "--data", "digits", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--batch-size", "512"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "vaefunc train: training 512/1,024 examples (50%)" in err and "epoch 1/1" in err
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--progress", "never"]) == 0
    assert "vaefunc train: training" not in capsys.readouterr().err


def test_a_terminal_that_reports_no_width_still_gets_a_bar(monkeypatch, capsys):
    """A pty opened without a size says 0 columns; tqdm would then draw an empty line."""
    import os
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((0, 0)))
    _log_likelihood("always")
    assert "log p(x)" in capsys.readouterr().err
