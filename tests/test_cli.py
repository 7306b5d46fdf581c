"""The ``vaefunc`` command, end to end through the real console script in a temporary folder.

The script is the one installed next to this Python (``pip install -e .``
puts it there); without it, ``python -m vaefunc`` with this tree on the path.
The data is a small .npz of real 8x8 digits written by the tests, so every run
takes seconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import vaefunc
from vaefunc import cli

ROOT = Path(__file__).resolve().parents[1]
PAD = 2  # pixels around each image of a grid
TINY = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "16"]
pytestmark = pytest.mark.slow


def command() -> list[str]:
    script = Path(sys.executable).parent / "vaefunc"
    if script.is_file():
        return [str(script)]
    found = shutil.which("vaefunc")
    if found and Path(found).parent == Path(sys.executable).parent:
        return [found]
    return [sys.executable, "-m", "vaefunc"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def vaefunc_cmd(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*command(), *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def grid(rows: int, cols: int, h: int = 8, w: int = 8) -> tuple[int, int]:
    return cols * w + (cols + 1) * PAD, rows * h + (rows + 1) * PAD


def png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return img.size


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with tiny.npz: 240 real 8x8 digits (216 train / 24 test by the fixed hold-out)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("cli")
    digits = load_digits()
    images = (digits.images[:240] * 16).clip(0, 255).astype(np.uint8)
    np.savez(folder / "tiny.npz", images=images, labels=digits.target[:240])
    return folder


@pytest.fixture(scope="module")
def trained(workdir) -> Path:
    out = vaefunc_cmd("train", "--data", "tiny.npz", "--epochs", "1", *TINY, "--out", "runs/one", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "test ELBO" in out.stdout and "runs/one" in out.stdout
    return workdir / "runs" / "one"


def test_train_writes_every_file(trained):
    assert sorted(p.name for p in trained.iterdir()) == sorted(cli.FILES)
    assert png_size(trained / "reconstructions.png") == grid(2, 10)
    assert png_size(trained / "samples.png") == grid(8, 8)
    assert png_size(trained / "traverse.png") == grid(2, 11)  # one row per latent dimension
    assert png_size(trained / "interpolate.png") == grid(5, 10)
    assert png_size(trained / "loss.png") == (800, 240)
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    for split in ("train", "test"):
        for key in ("loss", "elbo", "recon", "kl"):
            assert math.isfinite(rows[0][f"{split}_{key}"])
    config = json.loads((trained / "config.json").read_text())
    assert config["torch_version"] == torch.__version__ and config["vaefunc_version"] == vaefunc.__version__
    assert config["input_shape"] == [1, 8, 8] and config["hidden"] == [16] and config["compile"] == "auto"
    ckpt = vaefunc.load(trained / "checkpoint.safetensors")
    assert ckpt.state.epoch == 1 and ckpt.config["latent_dim"] == 2


def test_eval_prints_a_finite_elbo(trained, workdir):
    out = vaefunc_cmd("eval", str(trained), "--json", cwd=workdir)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert math.isfinite(result["elbo"]) and result["n"] == 24
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["elbo"] == pytest.approx(last["test_elbo"], rel=1e-9)  # the same fixed eps


@pytest.mark.parametrize(
    "args,name,size",
    [
        (["sample", "--n", "12", "--cols", "4"], "s.png", grid(3, 4)),
        (["reconstruct", "--n", "6"], "r.png", grid(2, 6)),
        (["interpolate", "--pairs", "3", "--steps", "7"], "i.png", grid(3, 7)),
        (["traverse", "--steps", "5"], "t.png", grid(2, 5)),
    ],
)
def test_picture_commands(trained, workdir, tmp_path, args, name, size, monkeypatch):
    monkeypatch.chdir(workdir)
    assert cli.main([args[0], str(trained), *args[1:], "--out", str(tmp_path / name)]) == 0
    assert png_size(tmp_path / name) == size


def load_both(a: Path, b: Path):
    return vaefunc.load(a / "checkpoint.safetensors"), vaefunc.load(b / "checkpoint.safetensors")


def test_sigint_then_resume_equals_an_uninterrupted_run(workdir):
    args = ["train", "--data", "tiny.npz", "--epochs", "12", "--latent-dim", "2", "--hidden", "8",
            "--batch-size", "8", "--seed", "3", "--binarize", "dynamic"]  # fmt: skip
    proc = subprocess.Popen([*command(), *args, "--out", "runs/cut"], cwd=workdir, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = workdir / "runs" / "cut" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().strip()) and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never finished an epoch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    assert "resume with: vaefunc train --out runs/cut --resume" in stderr
    state = vaefunc.load(workdir / "runs" / "cut" / "checkpoint.safetensors").state
    assert state.epoch * 27 + state.step < 12 * 27  # it did stop early

    resumed = vaefunc_cmd("train", "--out", "runs/cut", "--resume", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    full = vaefunc_cmd(*args, "--out", "runs/full", cwd=workdir)
    assert full.returncode == 0, full.stderr

    cut, ref = load_both(workdir / "runs" / "cut", workdir / "runs" / "full")
    for k in ref.params:
        assert_close(cut.params[k], ref.params[k], rtol=0, atol=0)
    for a, b in zip(cut.opt_state[0].nu.values(), ref.opt_state[0].nu.values()):
        assert_close(a, b, rtol=0, atol=0)
    assert int(cut.opt_state[0].count) == int(ref.opt_state[0].count) == 12 * 27
    rows = [[json.loads(line) for line in (workdir / "runs" / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("cut", "full")]  # fmt: skip
    assert [r["epoch"] for r in rows[0]] == list(range(1, 13))
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]


def one_error_line(out: subprocess.CompletedProcess, pattern: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert pattern in lines[0], lines[0]


def test_truncated_checkpoint(trained, workdir, tmp_path):
    raw = (trained / "checkpoint.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    one_error_line(vaefunc_cmd("eval", str(tmp_path / "cut.safetensors"), cwd=workdir), "truncated checkpoint")


def test_wrong_shape_checkpoint(trained, workdir, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    src = trained / "checkpoint.safetensors"
    with safe_open(src, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(src)
    other = vaefunc.init((1, 8, 8), latent_dim=3, hidden=(16,), seed=0)  # a consistent model, another latent_dim
    for key in ("encoder.2.weight", "encoder.2.bias", "decoder.0.weight"):
        tensors[f"params.{key}"] = other[key]
    save_file(tensors, tmp_path / "bad.safetensors", metadata=metadata)
    one_error_line(vaefunc_cmd("eval", str(tmp_path / "bad.safetensors"), cwd=workdir), "do not match the config")


def test_bad_argument_is_one_line_and_exit_2(workdir):
    one_error_line(vaefunc_cmd("train", "--epochs", "-1", cwd=workdir), "--epochs: expected an integer >= 0")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--data", "mnist"], "unknown dataset 'mnist': known names are ['digits', 'dsprites', 'mnist5k']"),
        (["train", "--resume"], "--resume needs --out"),
        (["train", "--lr", "nan"], "--lr: expected a positive finite number"),
        (["train", "--binarize", "sometimes"], "invalid choice: 'sometimes'"),
        (["eval", "no/such/run"], "no such checkpoint"),
        (["sample"], "the following arguments are required: RUN_OR_CHECKPOINT"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_arguments_in_process(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_existing_run_is_not_overwritten(trained, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert cli.main(["train", "--data", "tiny.npz", "--out", "runs/one"]) == 2
    assert "already holds a run: pass --resume" in capsys.readouterr().err


def test_resume_keeps_the_settings(trained, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert cli.main(["train", "--out", "runs/one", "--resume", "--lr", "0.1"]) == 2
    assert "--lr 0.1 differs from the run's 0.001" in capsys.readouterr().err


def test_data_that_does_not_fit_the_model(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "small.npy", np.zeros((10, 5, 5), np.uint8))
    assert cli.main(["eval", str(trained), "--data", "small.npy"]) == 2
    assert "the data's images are [1, 5, 5] (25 features); the model reads 64" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_cuda_missing(capsys):
    assert cli.main(["train", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["train", "eval", "sample", "reconstruct", "interpolate", "traverse"])
def test_help_shows_defaults(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--device {auto,cpu,cuda}" in text and "(default: auto)" in text


def test_defaults_are_the_default_model():
    args = cli.build_parser().parse_args(["train"])
    assert (args.data, args.epochs, args.latent_dim, args.hidden, args.compile) == ("mnist5k", 10, 20, [400], "auto")


def test_sigterm_writes_a_checkpoint_and_exits_143(workdir):
    args = ["train", "--data", "tiny.npz", "--epochs", "20", *TINY, "--out", "runs/term"]
    proc = subprocess.Popen([*command(), *args], cwd=workdir, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = workdir / "runs" / "term" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().strip()) and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never finished an epoch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM: finishing this step" in stderr and "--resume" in stderr
    state = vaefunc.load(workdir / "runs" / "term" / "checkpoint.safetensors").state
    assert 1 <= state.epoch < 20


def test_default_run_names_are_numbered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli._fresh_run_dir("mnist5k") == Path("runs/mnist5k")
    (tmp_path / "runs" / "mnist5k").mkdir(parents=True)
    assert cli._fresh_run_dir("mnist5k") == Path("runs/mnist5k-2")
    assert cli._fresh_run_dir(str(tmp_path / "data" / "mnist.pkl.gz")) == Path("runs/mnist")


# ---------------------------------------------------------------- presets, objectives, schedules, priors, NLL


def settings_of(argv: list[str]) -> dict:
    args = cli.build_parser().parse_args(argv)
    args.argv, args.given = argv, cli._given(None, argv)
    return cli._settings(args)


def test_preset_sets_what_no_flag_gives():
    s = settings_of(["train", "--preset", "iwae-paper"])
    assert (s["preset"], s["latent_dim"], s["hidden"]) == ("iwae-paper", 50, [200, 200])
    assert (s["objective"], s["k"], s["likelihood"]) == ("iwae", 50, "bernoulli")
    assert (s["batch_size"], s["epochs"], s["binarize"], s["lr"]) == (20, 3280, "dynamic", 1e-3)
    assert s["optimizer"] == {"name": "adam", "lr": "iwae-paper", "stages": 8, "b1": 0.9, "b2": 0.999, "eps": 1e-4}
    s = settings_of(["train", "--preset", "iwae-paper", "--k", "5", "--epochs", "2", "--lr", "3e-4",
                     "--binarize", "none", "--hidden", "16"])  # fmt: skip
    assert (s["k"], s["epochs"], s["lr"], s["binarize"], s["hidden"]) == (5, 2, 3e-4, None, [16])
    assert (s["latent_dim"], s["batch_size"], s["optimizer"]["lr"]) == (50, 20, "iwae-paper")  # the rest: the preset's
    assert settings_of(["train", "--preset", "iwae-paper-vae"])["objective"] == "elbo"
    assert settings_of(["train", "--preset", "iwae-paper"])["activation"] == "tanh"  # the paper's tanh layers
    assert settings_of(["train", "--preset", "iwae-paper-vae"])["activation"] == "tanh"
    assert settings_of(["train", "--preset", "iwae-paper", "--activation", "relu"])["activation"] == "relu"
    s = settings_of(["train"])
    assert (s["preset"], s["objective"], s["optimizer"], s["kl_schedule"], s["prior"], s["activation"]) == (
        None, "elbo", cli.DEFAULT_OPTIMIZER, None, "normal", "relu")  # fmt: skip


def test_kl_schedule_strings_name_the_schedules():
    steps = torch.tensor([0, 50, 100, 200])
    warmup = cli.parse_kl_schedule("warmup:100:4")
    assert_close(warmup.beta(steps), torch.tensor([0.0, 2.0, 4.0, 4.0], dtype=torch.float64))
    cap = cli.parse_kl_schedule("capacity:1000:25:100")
    assert_close(cap.capacity(steps), torch.tensor([0.0, 12.5, 25.0, 25.0], dtype=torch.float64))
    assert_close(cap.beta(steps), torch.full((4,), 1000.0, dtype=torch.float64))
    assert cli.parse_kl_schedule("free-bits:0.5").free_bits == 0.5
    assert cli.parse_kl_schedule(None) is None
    for bad in ("warmup", "warmup:x", "warmup:0", "capacity:1:2", "free-bits:-1", "cosine:5", ""):
        with pytest.raises(ValueError, match="expected warmup:STEPS"):
            cli.parse_kl_schedule(bad)


def run_rows(run: Path) -> tuple[dict, dict]:
    config = json.loads((run / "config.json").read_text())
    return config, json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_preset_run_resumes_like_an_uninterrupted_one(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    args = ["train", "--data", "tiny.npz", "--preset", "iwae-paper", "--latent-dim", "2", "--hidden", "16",
            "--k", "3", "--batch-size", "16", "--progress", "never"]  # fmt: skip
    assert cli.main([*args, "--epochs", "1", "--out", "runs/preset"]) == 0
    config, _ = run_rows(workdir / "runs" / "preset")
    assert (config["preset"], config["objective"], config["k"]) == ("iwae-paper", "iwae", 3)
    assert config["binarize"] == "dynamic" and config["latent_dim"] == 2 and config["batch_size"] == 16
    assert config["optimizer"]["lr"] == "iwae-paper" and config["hidden"] == [16]
    assert cli.main(["train", "--out", "runs/preset", "--resume", "--epochs", "2"]) == 0
    assert cli.main([*args, "--epochs", "2", "--out", "runs/preset-full"]) == 0
    cut, ref = load_both(workdir / "runs" / "preset", workdir / "runs" / "preset-full")
    assert int(cut.opt_state[0].count) == 2 * (216 // 16)
    for k in ref.params:
        assert_close(cut.params[k], ref.params[k], rtol=0, atol=0)


def test_resume_of_a_preset_run_keeps_its_settings(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert cli.main(["train", "--data", "tiny.npz", "--preset", "iwae-paper", "--latent-dim", "2", "--hidden", "8",
                     "--batch-size", "16", "--epochs", "0", "--out", "runs/keep"]) == 0  # fmt: skip
    assert cli.main(["train", "--out", "runs/keep", "--resume", "--k", "7"]) == 2
    assert "--k 7 differs from the run's 50" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags,check",
    [
        # iwae: the loss is -log mean_i w_i <= -mean_i log w_i = -ELBO for every batch (Jensen), strictly
        # unless the k weights are equal; an elbo run has loss == -ELBO.
        (["--objective", "iwae", "--k", "3", "--likelihood", "gaussian", "--learn-obs-std", "pixel",
          "--obs-std", "0.5"],
         lambda cfg, row, params: row["train_loss"] < -row["train_elbo"] - 1e-3
         and params["likelihood.logstd"].shape == (64,)
         and not torch.allclose(params["likelihood.logstd"], torch.full((64,), math.log(0.5)))),
        # warm-up: beta <= 13/1000 during the 13 steps, so loss = -rec + beta KL < -rec + KL = -ELBO.
        (["--kl-schedule", "warmup:1000", "--likelihood", "continuous_bernoulli", "--binarize", "static"],
         lambda cfg, row, params: row["train_loss"] < -row["train_elbo"] - 1e-3 and cfg["binarize"] == "static"),
        # free bits of 5 nats on each of 2 dimensions: loss >= -rec + 10 > -ELBO while the KL is below 10.
        (["--kl-schedule", "free-bits:5"], lambda cfg, row, params: row["train_loss"] > -row["train_elbo"] + 1),
        (["--prior", "mog", "--prior-components", "3", "--kl-schedule", "capacity:10:5:50"],
         lambda cfg, row, params: params["prior.means"].shape == (3, 2) and cfg["prior_components"] == 3),
        (["--prior", "vamp", "--prior-components", "4"],
         lambda cfg, row, params: params["prior.pseudo_inputs"].shape == (4, 64)),
    ],
    ids=["iwae-gaussian-learned-std", "warmup-continuous-bernoulli", "free-bits", "mog-capacity", "vamp"],
)
def test_flags_reach_train_and_eval_uses_the_run_settings(flags, check, workdir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    run = tmp_path / "run"
    argv = ["train", "--data", "tiny.npz", "--epochs", "1", *TINY, "--progress", "never", *flags, "--out", str(run)]
    assert cli.main(argv) == 0
    config, row = run_rows(run)
    given = dict(zip(flags[::2], flags[1::2]))
    for flag, value in given.items():
        assert str(config[flag[2:].replace("-", "_")]) == value, flag
    assert check(config, row, vaefunc.load(run / "checkpoint.safetensors").params)
    capsys.readouterr()
    # eval reads the likelihood, obs_std, prior and binarization from the checkpoint: with the same
    # fixed eps it gives the test ELBO that training logged.
    assert cli.main(["eval", str(run), "--k", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["elbo"] == pytest.approx(row["test_elbo"], rel=1e-9)
    assert math.isfinite(result["nll"]) and result["k"] == 20


def test_eval_nll_is_at_most_the_negative_elbo(trained, workdir, capsys, monkeypatch):
    """The NLL estimate against -ELBO on the 216 training digits.

    For each example, E[log (1/k) sum_i w_i] >= E[log w] = ELBO (Jensen), so the
    mean gap log p_k(x) - ELBO(x) is >= 0 in expectation; eval reports it with
    its standard error over examples. The single-sample ELBO is noisy and k = 50
    is small, so the check is loose: the gap must not lie more than 3 standard
    errors below 0 (a false alarm under 0.2%, normal approximation, one-sided).
    A fixed seed makes the run deterministic. The estimator's own statistics,
    with negative controls, are tested in tests/test_estimators*.py; this checks
    the command's wiring.
    """
    monkeypatch.chdir(workdir)
    assert cli.main(["eval", str(trained), "--split", "train", "--k", "50", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 216 and all(math.isfinite(r[key]) for key in ("nll", "nll_se", "gap", "gap_se"))
    assert r["nll"] == pytest.approx(-r["elbo"] - r["gap"], abs=1e-6)
    assert r["gap"] >= -3 * r["gap_se"]
    assert r["nll"] <= -r["elbo"] + 3 * r["gap_se"]
    assert cli.main(["eval", str(trained), "--k", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("test ELBO") and out[1].startswith("test NLL") and "k=10" in out[1]
    assert cli.main(["eval", str(trained), "--k", "0", "--json"]) == 0
    assert "nll" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--kl-schedule", "warmup:x"], "argument --kl-schedule: expected warmup:STEPS[:BETA]"),
        (["train", "--kl-schedule", "cosine:5"], "capacity:GAMMA:CMAX:STEPS or free-bits:LAMBDA; got 'cosine:5'"),
        (["train", "--preset", "nope"], "invalid choice: 'nope'"),
        (["train", "--preset", "iwae-paper", "--beta", "2"], "the iwae objective takes no --beta"),
        (["train", "--k", "3"], "--k sets the samples of --objective iwae"),
        (["train", "--kl-schedule", "warmup:10", "--beta", "2"], "give --beta or --kl-schedule, not both"),
        (["train", "--learn-obs-std", "global"], "--learn-obs-std needs --likelihood gaussian"),
        (["train", "--kl-schedule", "free-bits:0.5", "--prior", "vamp"], "free-bits needs --prior normal"),
        (["train", "--likelihood", "poisson"], "invalid choice: 'poisson'"),
        (["train", "--prior-components", "3"], "--prior-components sets the size of --prior mog or vamp"),
        (["train", "--obs-std", "0.1"], "--obs-std needs --likelihood gaussian"),
        (["eval", "run", "--k", "-1"], "--k: expected an integer >= 0"),
    ],
)
def test_bad_new_arguments_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    test_bad_arguments_in_process(argv, message, capsys, tmp_path, monkeypatch)
    assert not (tmp_path / "runs").exists()  # rejected before any work


def test_preset_optimizer_is_the_library_presets():
    settings = settings_of(["train", "--preset", "iwae-paper"])
    ours = cli._optimizer(settings, 2)
    ref = vaefunc.preset_train_kwargs("iwae-paper", n_train=40)["train"]["optimizer"]  # 40 // 20: 2 steps an epoch
    params, grads = {"w": torch.zeros(3)}, {"w": torch.tensor([1.0, -2.0, 0.5])}
    state_a, state_b = ours.init(params), ref.init(params)
    for _ in range(10):  # epochs 0 to 4: the lr drops after epochs 1 and 4
        upd_a, state_a = ours.update(grads, state_a, params)
        upd_b, state_b = ref.update(grads, state_b, params)
        assert_close(upd_a["w"], upd_b["w"], rtol=0, atol=0)
    assert cli._optimizer(settings_of(["train"]), 2) is None  # train's own adam(lr)


def test_samples_come_from_the_models_prior():
    params = vaefunc.init_prior(vaefunc.init((4,), latent_dim=2, hidden=(), seed=0), "mog", n_components=2)
    params |= {"prior.means": torch.tensor([[10.0, 10.0], [-10.0, 5.0]]), "prior.logvars": torch.full((2, 2), -20.0),
               "prior.logits": torch.tensor([0.0, -30.0])}  # fmt: skip
    z = cli.prior_draws(params, 50, torch.Generator().manual_seed(0))
    assert_close(z, torch.tensor([10.0, 10.0]).expand(50, 2), atol=1e-3, rtol=0)  # the one component with weight
    normal = cli.prior_draws(vaefunc.init((4,), latent_dim=2, hidden=()), 2000, torch.Generator().manual_seed(0))
    assert abs(float(normal.mean())) < 0.1 and abs(float(normal.std()) - 1) < 0.05  # N(0, I): 4000 draws, se 0.016


def test_a_tanh_run_is_saved_and_evaluated_as_tanh(workdir, tmp_path, capsys, monkeypatch):
    """--activation tanh reaches train, config.json and the checkpoint; eval and the picture commands
    run the model with it, a checkpoint saved without one is read as ReLU, and a contradicting
    --activation is refused."""
    monkeypatch.chdir(workdir)
    run = tmp_path / "tanh"
    argv = ["train", "--data", "tiny.npz", "--epochs", "1", *TINY, "--progress", "never", "--activation", "tanh"]
    assert cli.main([*argv, "--out", str(run)]) == 0
    config, row = run_rows(run)
    ckpt = vaefunc.load(run / "checkpoint.safetensors")
    assert config["activation"] == ckpt.config["activation"] == "tanh"
    capsys.readouterr()

    # The eval ELBO is vaefunc.elbo with activation="tanh" at eval's fixed eps, and not the ReLU one.
    x = cli._load(config, "test").images.reshape(-1, 64)
    eps = cli._eval_eps(x.shape[0], 2, config["seed"], torch.device("cpu"))
    tanh, relu = (float(vaefunc.elbo(ckpt.params, x, eps, activation=a).double().mean()) for a in ("tanh", "relu"))
    assert abs(tanh - relu) > 1e-3

    def eval_elbo(*args: str) -> float:
        assert cli.main(["eval", *args, "--k", "0", "--json"]) == 0
        return json.loads(capsys.readouterr().out)["elbo"]

    got = eval_elbo(str(run))
    assert got == pytest.approx(tanh, rel=1e-6) and got == pytest.approx(row["test_elbo"], rel=1e-9)
    # A checkpoint whose config has no activation (older runs, or saved by hand) is a ReLU model.
    bare = vaefunc.save(tmp_path / "old.safetensors", ckpt.params, config={k: v for k, v in config.items()
                                                                         if k != "activation"})  # fmt: skip
    assert eval_elbo(str(bare)) == pytest.approx(relu, rel=1e-6)
    assert eval_elbo(str(bare), "--activation", "tanh") == pytest.approx(tanh, rel=1e-6)
    # A run that saved its activation refuses another, in eval and in a resumed training.
    assert cli.main(["eval", str(run), "--activation", "relu"]) == 2
    assert "--activation relu differs from the tanh the model was trained with" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(run), "--resume", "--activation", "relu"]) == 2
    assert "--activation 'relu' differs from the run's 'tanh'" in capsys.readouterr().err

    # Every picture command hands the run's activation to the function that runs the network.
    from vaefunc import pictures

    seen = []

    def spy(real):
        return lambda *a, **k: seen.append(k.get("activation")) or real(*a, **k)

    for name in ("reconstructions", "interpolation", "traversal"):
        monkeypatch.setattr(cli, name, spy(getattr(cli, name)))
    monkeypatch.setattr(pictures, "mean_images", spy(pictures.mean_images))
    for command in ("sample", "reconstruct", "interpolate", "traverse"):
        seen.clear()
        assert cli.main([command, str(run), "--out", str(tmp_path / f"{command}.png")]) == 0
        assert seen and set(seen) == {"tanh"}, command
