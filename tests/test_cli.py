"""The ``vaefunc`` command, end to end through the real console script in a temporary folder.

The script is the one installed next to this Python (``pip install -e .``
puts it there) when it runs this version's launcher (``vaefunc._launch``);
otherwise (an install of an older checkout), ``python -m vaefunc`` with this
tree on the path.
The data is a small .npz of real 8x8 digits written by the tests, so every run
takes seconds.
"""

from __future__ import annotations

import json
import math
import os
import platform
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
from vaefunc.cli import rundir
from vaefunc.cli import settings as cli_settings

ROOT = Path(__file__).resolve().parents[1]
PAD = 2  # pixels around each image of a grid
TINY = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "16"]
pytestmark = pytest.mark.slow


def command() -> list[str]:
    """The console script next to this Python, if it runs this version's launcher; else python -m vaefunc."""
    script = Path(sys.executable).parent / "vaefunc"
    if script.is_file() and "vaefunc._launch" in script.read_text(encoding="utf-8", errors="replace"):
        return [str(script)]
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


def grid_of(path: Path) -> tuple[int, int]:
    """The size of the image grid inside a captioned picture, before it was scaled up (at least 200 pixels)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        left, top, right, bottom = map(int, img.text["vaefunc.grid_box"].split())
        scale = int(img.text["vaefunc.scale"])
        assert 0 <= left < right <= img.width and 0 <= top < bottom <= img.height and right - left >= 200
        assert (right - left) % scale == 0 and (bottom - top) % scale == 0
        return (right - left) // scale, (bottom - top) // scale


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
    assert sorted(p.name for p in trained.iterdir() if p.name != ".lock") == sorted(cli.FILES)  # .lock: the run lock
    assert grid_of(trained / "reconstructions.png") == grid(2, 10)
    assert grid_of(trained / "samples.png") == grid(8, 8)
    assert grid_of(trained / "traverse.png") == grid(2, 11)  # one row per latent dimension
    assert grid_of(trained / "interpolate.png") == grid(5, 10)
    assert png_size(trained / "loss.png") == (1000, 320)
    assert grid_of(trained / "manifold.png") == grid(15, 15)  # 2 latent dimensions: latent.png, manifold.png
    assert png_size(trained / "latent.png")[0] >= 600
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    for split in ("train", "test"):
        for key in ("loss", "elbo", "recon", "kl"):
            assert math.isfinite(rows[0][f"{split}_{key}"])
    # config.json is in sections now (model spec, training config, data, versions), hence the new keys.
    config = json.loads((trained / "config.json").read_text())
    versions = {"vaefunc": vaefunc.__version__, "torch": torch.__version__, "python": platform.python_version()}
    assert config["versions"] == versions and config["command"].startswith("vaefunc train --data tiny.npz")
    assert config["data"]["input_shape"] == [1, 8, 8] and config["model"]["hidden"] == [16]
    assert config["train"]["compile"] == "auto" and (config["data"]["n_train"], config["data"]["n_test"]) == (216, 24)
    ckpt = vaefunc.load(trained / "checkpoint.safetensors")
    assert ckpt.state.epoch == 1 and ckpt.config == config and ckpt.model.latent_dim == 2


def test_config_json_round_trips(trained):
    """config.json's sections are the spec the checkpoint saved and a TrainConfig, read back as they were."""
    config = json.loads((trained / "config.json").read_text())
    ckpt = vaefunc.load(trained / "checkpoint.safetensors")
    assert vaefunc.VAE.from_dict(config["model"]) == ckpt.model
    train = vaefunc.TrainConfig.from_dict(config["train"])
    assert train.to_dict() == config["train"] and (train.epochs, train.batch_size, train.seed) == (1, 16, 0)
    s = cli_settings.from_json(config)
    assert s.spec() == ckpt.model and s.config == train and s.data == config["data"] and s.preset is None
    assert len(config["run_id"]) == 32 and int(config["run_id"], 16) >= 0  # a uuid4's hex, also in the checkpoint
    assert ckpt.config["run_id"] == config["run_id"]
    assert cli_settings.to_json(s, command=config["command"], run_id=config["run_id"]) == config


def test_eval_prints_a_finite_elbo(trained, workdir):
    out = vaefunc_cmd("eval", str(trained), "--json", cwd=workdir)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert math.isfinite(result["elbo"]) and result["n"] == 24
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["elbo"] == pytest.approx(last["test_elbo"], rel=1e-9)  # the same fixed eps


def test_eval_autocast_reaches_the_nll_estimate(trained, workdir, capsys, monkeypatch):
    """--autocast bf16 runs the NLL's matmuls in bf16 (a slightly different estimate); none and the
    default (auto: float32 for so short an estimate) agree bit for bit."""
    monkeypatch.chdir(workdir)
    nll = {}
    for flag in ("none", "auto", "bf16"):
        assert cli.main(["eval", str(trained), "--k", "20", "--json", "--autocast", flag]) == 0
        nll[flag] = json.loads(capsys.readouterr().out)["nll"]
    assert nll["none"] == nll["auto"] and nll["bf16"] != nll["none"]
    assert nll["bf16"] == pytest.approx(nll["none"], abs=0.5)


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
    assert grid_of(tmp_path / name) == size


def test_picture_commands_write_into_the_run_directory_unless_out_says_otherwise(trained, tmp_path, monkeypatch,
                                                                               capsys):  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("*.png"))
    monkeypatch.chdir(tmp_path)  # not the run's folder
    for command, name in (("sample", "samples.png"), ("reconstruct", "reconstructions.png"),
                          ("interpolate", "interpolate.png"), ("traverse", "traverse.png")):  # fmt: skip
        assert cli.main([command, str(run)]) == 0
        assert capsys.readouterr().out == f"{run / name}\n" and (run / name).is_file()
    assert cli.main(["sample", str(run / "checkpoint.safetensors"), "--n", "4", "--cols", "2"]) == 0  # beside it
    assert grid_of(run / "samples.png") == grid(2, 2) and not list(tmp_path.glob("*.png"))
    assert cli.main(["sample", str(run), "--out", "mine.png"]) == 0 and (tmp_path / "mine.png").is_file()


def test_latent_draws_a_2d_latent_space_and_its_decoder(trained, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("*.png"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["latent", str(run), "--steps", "5"]) == 0
    assert capsys.readouterr().out.split() == [str(run / "latent.png"), str(run / "manifold.png")]
    assert grid_of(run / "manifold.png") == grid(5, 5) and png_size(run / "latent.png")[0] >= 600
    assert cli.main(["latent", str(run), "--out", "figs"]) == 0 and (tmp_path / "figs" / "manifold.png").is_file()
    capsys.readouterr()
    model = vaefunc.VAE((1, 8, 8), latent_dim=3, hidden=(4,))
    vaefunc.save(tmp_path / "z3.safetensors", model.init(seed=0), model=model)
    assert cli.main(["latent", str(tmp_path / "z3.safetensors"), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 3 latent dimensions (vaefunc traverse shows any number)" in err


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
    other = vaefunc.VAE((1, 8, 8), latent_dim=3, hidden=(16,)).init(0)  # a consistent model, another latent_dim
    for key in ("encoder.2.weight", "encoder.2.bias", "decoder.0.weight"):
        tensors[f"params.{key}"] = other[key]
    save_file(tensors, tmp_path / "bad.safetensors", metadata=metadata)
    # The checkpoint holds the model spec now, so the params are checked against it first (a new message).
    one_error_line(vaefunc_cmd("eval", str(tmp_path / "bad.safetensors"), cwd=workdir), "do not match the model")


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


@pytest.mark.parametrize("name", ["train", "sweep", "eval", "sample", "reconstruct", "interpolate", "traverse",
                                  "latent"])
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
    monkeypatch.chdir(tmp_path)  # cli._fresh_run_dir moved to vaefunc.cli.rundir.fresh_run_dir
    assert rundir.fresh_run_dir("mnist5k") == Path("runs/mnist5k")
    (tmp_path / "runs" / "mnist5k").mkdir(parents=True)
    assert rundir.fresh_run_dir("mnist5k") == Path("runs/mnist5k-2")
    assert rundir.fresh_run_dir(str(tmp_path / "data" / "mnist.pkl.gz")) == Path("runs/mnist")
    assert rundir.fresh_run_dir("mnist5k", "-sweep") == Path("runs/mnist5k-sweep")


# ---------------------------------------------------------------- presets, objectives, schedules, priors, NLL


def settings_of(argv: list[str]) -> cli_settings.Settings:
    """A new run's settings: cli._settings (a flat dict) became vaefunc.cli.settings.from_args, which gives
    the model's fields, a TrainConfig and the data options."""
    args = cli.build_parser().parse_args(argv)
    args.argv, args.given = argv, cli.given(argv)
    return cli_settings.from_args(args)


def test_preset_sets_what_no_flag_gives():
    s = settings_of(["train", "--preset", "iwae-paper"])
    m, c = s.model, s.config
    assert (s.preset, m["latent_dim"], m["hidden"]) == ("iwae-paper", 50, (200, 200))
    assert (c.objective, c.k, m["likelihood"]) == ("iwae", 50, "bernoulli")
    assert (c.batch_size, c.epochs, c.binarize, c.lr) == (20, 3280, "dynamic", 1e-3)
    assert (c.lr_schedule, c.adam_b1, c.adam_b2, c.adam_eps) == ("iwae-paper:8", 0.9, 0.999, 1e-4)
    s = settings_of(["train", "--preset", "iwae-paper", "--k", "5", "--epochs", "2", "--lr", "3e-4",
                     "--binarize", "none", "--hidden", "16"])  # fmt: skip
    assert (s.config.k, s.config.epochs, s.config.lr, s.config.binarize, s.model["hidden"]) == (5, 2, 3e-4, None, (16,))
    assert (s.model["latent_dim"], s.config.batch_size, s.config.lr_schedule) == (50, 20, "iwae-paper:8")  # preset's
    assert settings_of(["train", "--preset", "iwae-paper-vae"]).config.objective == "elbo"
    assert settings_of(["train", "--preset", "iwae-paper"]).model["activation"] == "tanh"  # the paper's tanh layers
    assert settings_of(["train", "--preset", "iwae-paper-vae"]).model["activation"] == "tanh"
    assert settings_of(["train", "--preset", "iwae-paper", "--activation", "relu"]).model["activation"] == "relu"
    assert settings_of(["train", "--preset", "iwae-paper", "--lr-schedule", "none"]).config.lr_schedule is None
    s = settings_of(["train"])
    assert (s.preset, s.config.objective, s.config.lr_schedule, s.config.adam_eps, s.config.kl_schedule) == (
        None, "elbo", None, 1e-8, None)  # fmt: skip
    assert (s.model["prior"], s.model["activation"], s.model["arch"], s.model["n_classes"]) == (
        "normal", "relu", "mlp", 0)  # fmt: skip


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
    model, train = config["model"], config["train"]  # config.json's sections
    assert (config["preset"], train["objective"], train["k"]) == ("iwae-paper", "iwae", 3)
    assert train["binarize"] == "dynamic" and model["latent_dim"] == 2 and train["batch_size"] == 16
    assert train["lr_schedule"] == "iwae-paper:8" and model["hidden"] == [16] and model["activation"] == "tanh"
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


@pytest.mark.parametrize("flag, saved, how", [("bf16", "bf16", "(eager, bf16 matmuls, cpu, auto: "),
                                              ("none", None, "(eager, cpu, auto: ")])
def test_autocast_flag_is_saved_and_the_summary_says_how_the_step_ran(flag, saved, how, workdir, tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    monkeypatch.chdir(workdir)
    run = tmp_path / "run"
    argv = ["train", "--data", "tiny.npz", "--epochs", "1", *TINY, "--progress", "never", "--autocast", flag,
            "--out", str(run)]  # fmt: skip
    assert cli.main(argv) == 0
    assert how in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["train"]["autocast"] == saved


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
    summary = capsys.readouterr().out
    if "iwae" in flags:  # the training bound and the test ELBO under their own names, not one "-ELBO"
        assert f"train IWAE_3 {-row['train_loss']:.2f} nats  (the training bound, k=3;" in summary
        assert "train ELBO" not in summary and "test ELBO" in summary and "single sample" in summary
    else:
        assert f"train ELBO {row['train_elbo']:.2f} nats" in summary
    config = config["model"] | config["train"]  # config.json's sections; a KL schedule is saved in its full form
    given = dict(zip(flags[::2], flags[1::2]))
    for flag, value in given.items():
        value = vaefunc.schedules.parse(value).spec if flag == "--kl-schedule" else value
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
        # --kl-schedule is vaefunc.schedules.parse now, whose message names the forms it reads (more of them).
        (["train", "--kl-schedule", "warmup:x"], "argument --kl-schedule: expected warmup:STEPS[:BETA[:START]]"),
        (["train", "--kl-schedule", "cosine:5"], "free-bits:LAMBDA[:BETA] or beta:BETA; got 'cosine:5'"),
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
    # cli._optimizer is gone: a preset's Adam and lr schedule are TrainConfig fields (lr_schedule, adam_eps)
    # that vaefunc.train builds, so the run's config must be the library preset's.
    assert settings_of(["train", "--preset", "iwae-paper"]).config == vaefunc.presets.preset("iwae-paper").config
    s = settings_of(["train", "--preset", "iwae-paper-vae", "--epochs", "3"])
    assert s.config == vaefunc.presets.preset("iwae-paper-vae", epochs=3).config
    assert s.model.items() >= vaefunc.presets.preset("iwae-paper-vae").model.items()
    assert settings_of(["train"]).config.lr_schedule is None  # train's own constant-lr Adam


def test_samples_come_from_the_models_prior():
    # cli.prior_draws is gone: `sample` draws with VAE.sample, whose prior draw is vaefunc.priors.draw.
    params = vaefunc.VAE((4,), latent_dim=2, hidden=(), prior="mog", prior_components=2).init(0)
    params |= {"prior.means": torch.tensor([[10.0, 10.0], [-10.0, 5.0]]), "prior.logvars": torch.full((2, 2), -20.0),
               "prior.logits": torch.tensor([0.0, -30.0])}  # fmt: skip
    model = vaefunc.VAE.from_params(params)
    z = vaefunc.priors.draw(model, params, 50, torch.Generator().manual_seed(0))
    assert_close(z, torch.tensor([10.0, 10.0]).expand(50, 2), atol=1e-3, rtol=0)  # the one component with weight
    normal = vaefunc.VAE((4,), latent_dim=2, hidden=()).init()
    z = vaefunc.priors.draw(vaefunc.VAE.from_params(normal), normal, 2000, torch.Generator().manual_seed(0))
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.05  # N(0, I): 4000 draws, se 0.016


def test_a_tanh_run_is_saved_and_evaluated_as_tanh(workdir, tmp_path, capsys, monkeypatch):
    """--activation tanh reaches train, config.json and the checkpoint's spec; eval and the picture commands
    run the model with it, a checkpoint saved without one is read as ReLU, and a contradicting
    --activation is refused."""
    monkeypatch.chdir(workdir)
    run = tmp_path / "tanh"
    argv = ["train", "--data", "tiny.npz", "--epochs", "1", *TINY, "--progress", "never", "--activation", "tanh"]
    assert cli.main([*argv, "--out", str(run)]) == 0
    config, row = run_rows(run)
    ckpt = vaefunc.load(run / "checkpoint.safetensors")
    # The activation is a field of the model spec: config.json's "model" section and the checkpoint's spec.
    assert config["model"]["activation"] == ckpt.config["model"]["activation"] == ckpt.model.activation == "tanh"
    capsys.readouterr()

    # The eval ELBO is the tanh spec's elbo at eval's fixed eps, and not the ReLU one.
    x = vaefunc.data.load(config["data"]["name"], split="test").images.reshape(-1, 64)
    eps = torch.randn(x.shape[0], 2, generator=torch.Generator().manual_seed(config["train"]["seed"]))
    tanh, relu = (float(vaefunc.VAE.from_params(ckpt.params, activation=a).elbo(ckpt.params, x, eps).double().mean())
                  for a in ("tanh", "relu"))  # fmt: skip
    assert abs(tanh - relu) > 1e-3

    def eval_elbo(*args: str) -> float:
        assert cli.main(["eval", *args, "--k", "0", "--json"]) == 0
        return json.loads(capsys.readouterr().out)["elbo"]

    got = eval_elbo(str(run))
    assert got == pytest.approx(tanh, rel=1e-6) and got == pytest.approx(row["test_elbo"], rel=1e-9)
    # A checkpoint saved without a spec, whose config names no activation (vaefunc 0.1's flat settings, or
    # saved by hand), is a ReLU model.
    old = {"data": config["data"]["name"], "input_shape": [1, 8, 8], "latent_dim": 2, "hidden": [16], "seed": 0}
    bare = vaefunc.save(tmp_path / "old.safetensors", ckpt.params, config=old)
    assert eval_elbo(str(bare)) == pytest.approx(relu, rel=1e-6)
    assert eval_elbo(str(bare), "--activation", "tanh") == pytest.approx(tanh, rel=1e-6)
    # A run that saved its activation refuses another, in eval and in a resumed training.
    assert cli.main(["eval", str(run), "--activation", "relu"]) == 2
    assert "--activation relu differs from the tanh the model was trained with" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(run), "--resume", "--activation", "relu"]) == 2
    assert "--activation 'relu' differs from the run's 'tanh'" in capsys.readouterr().err

    # Every picture command hands the run's spec (and so its activation) to the function that runs the
    # network; they take model= now, where they took activation= (hence the spies' new places).
    from vaefunc import pictures, traversal

    seen = []

    def spy(real):
        return lambda *a, **k: seen.append(k["model"].activation) or real(*a, **k)

    for module, name in ((pictures, "reconstructions"), (pictures, "interpolation"), (traversal, "traversal")):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    real_sample = vaefunc.VAE.sample
    monkeypatch.setattr(vaefunc.VAE, "sample", lambda self, *a, **k: seen.append(self.activation)
                        or real_sample(self, *a, **k))  # fmt: skip
    for command in ("sample", "reconstruct", "interpolate", "traverse"):
        seen.clear()
        assert cli.main([command, str(run), "--out", str(tmp_path / f"{command}.png")]) == 0
        assert seen and set(seen) == {"tanh"}, command


# ---------------------------------------------------------------- conv and conditional models, sweeps


DIGITS = ["--data", "digits", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--limit", "200",
          "--batch-size", "32", "--progress", "never"]  # fmt: skip


def test_conv_conditional_run_end_to_end(tmp_path, capsys, monkeypatch):
    """--arch conv and --n-classes (the data's labels) reach the spec, train, the checkpoint and every command."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "conv"
    flags = ["--arch", "conv", "--channels", "4", "--n-classes", "10"]
    assert cli.main(["train", *DIGITS, *flags, "--out", str(run)]) == 0
    assert "trained 1x8x8-conv(4)-8-2 (10 classes) on digits" in capsys.readouterr().out
    config, row = run_rows(run)
    ckpt = vaefunc.load(run / "checkpoint.safetensors")
    assert ckpt.model == vaefunc.VAE.from_dict(config["model"])
    assert (ckpt.model.arch, ckpt.model.channels, ckpt.model.n_classes) == ("conv", (4,), 10)
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == sorted(cli.FILES)  # with interpolate.png
    assert cli.main(["eval", str(run), "--k", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["elbo"] == pytest.approx(row["test_elbo"], rel=1e-9) and math.isfinite(result["nll"])
    pictures = [(["sample", "--n", "20", "--cols", "10"], grid(10, 2)),  # a row per class, 20 // 10 in each
                (["sample", "--n", "20", "--cols", "10", "--label", "3"], grid(2, 10)),
                (["traverse", "--label", "3"], grid(2, 11)), (["reconstruct", "--n", "4"], grid(2, 4))]  # fmt: skip
    for args, size in pictures:
        assert cli.main([args[0], str(run), *args[1:], "--out", str(tmp_path / "p.png")]) == 0
        assert grid_of(tmp_path / "p.png") == size
    assert cli.main(["interpolate", str(run), "--pairs", "3", "--out", str(tmp_path / "i.png")]) == 0
    assert grid_of(tmp_path / "i.png") == grid(3, 10)


def test_semi_supervised_run_end_to_end(tmp_path, capsys, monkeypatch):
    """--semi-supervised --labels-per-class N: the run is vaefunc.train on keep_labels(y, N) bit for bit, and
    its test classification error is logged each epoch, printed at the end and reported by eval."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "ssl"
    # --alpha 40: about vaefunc 0.2's default; with the paper's weight, 2 epochs of 200 digits leave q(y|x) at chance
    flags = ["--n-classes", "10", "--semi-supervised", "--labels-per-class", "3", "--epochs", "2", "--alpha", "40"]
    assert cli.main(["train", *DIGITS, *flags, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "(10 classes, semi-supervised)" in out and "3 labels per class kept for training" in out
    config, row = run_rows(run)
    assert config["data"]["labels_per_class"] == 3 and config["model"]["semi_supervised"] is True
    ckpt = vaefunc.load(run / "checkpoint.safetensors")
    train_set = vaefunc.data.load("digits", split="train", limit=200)
    kept = vaefunc.data.keep_labels(train_set.labels, 3, seed=0)
    assert int((kept >= 0).sum()) == 30
    again = vaefunc.train(ckpt.model.init(0), train_set.images, model=ckpt.model, labels=kept,
                          config=vaefunc.TrainConfig.from_dict(config["train"]))  # fmt: skip
    assert all(torch.equal(again.params[k], ckpt.params[k]) for k in ckpt.params)
    # the logged step counts the labelled examples' repeats, as train's epoch does
    unlabelled = len(kept) - 30
    rows = unlabelled + 30 * max(1, round(0.25 * unlabelled / (0.75 * 30)))
    assert row["step"] == 2 * (rows // config["train"]["batch_size"])
    test_set = vaefunc.data.load("digits", split="test", limit=200)
    error = vaefunc.metrics.classification_error(ckpt.params, test_set.images, test_set.labels, model=ckpt.model)
    assert row["test_error"] == error and 0 < error < 0.9  # 10 classes: chance is 0.9
    assert cli.main(["eval", str(run), "--k", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["error"] == error


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--semi-supervised"], "--semi-supervised infers the class of unlabelled examples; give --n-classes N"),
        (["--labels-per-class", "3"], "--labels-per-class is for a semi-supervised model: add --semi-supervised"),
        (["--n-classes", "10", "--alpha", "1"], "--alpha is for a semi-supervised model"),
        (["--n-classes", "3"], "--n-classes 3 does not match the data, whose labels hold 10 classes (0 to 9)"),
        (["--n-classes", "10", "--data", "small.npy"], "--n-classes 10 needs labelled data; this data has no labels"),
        (["--channels", "8"], "--channels is for --arch conv; this run's arch is mlp"),
        (["--arch", "conv", "--data", "odd.npy"], "arch='conv' needs a square image input_shape"),
    ],
)
def test_bad_model_flags_are_one_line(flags, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "small.npy", np.zeros((20, 8, 8), np.uint8))
    np.save(tmp_path / "odd.npy", np.zeros((20, 6, 8), np.uint8))
    assert cli.main(["train", *DIGITS, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()  # rejected before any work


def test_sweep_trains_one_model_per_beta(workdir, tmp_path, capsys, monkeypatch):
    """vaefunc sweep: one metrics line per epoch per model, a stacked checkpoint with the member's spec,
    rate_distortion.png and a table; each model is the run `train` makes with its beta; it resumes."""
    monkeypatch.chdir(workdir)
    run = tmp_path / "sweep"
    args = ["--data", "tiny.npz", "--latent-dim", "2", "--hidden", "8", "--batch-size", "16", "--progress", "never"]
    assert cli.main(["sweep", *args, "--epochs", "1", "--beta", "0.5", "1", "4", "--out", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("vaefunc: trained 3 models of 64-8-2 at once on") and "rate (KL)" in out[1]
    assert [line.split()[:2] for line in out[2:5]] == [["0", "0.5"], ["1", "1"], ["2", "4"]]
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == sorted(cli.SWEEP_FILES)
    config, _ = run_rows(run)
    ckpt = vaefunc.load(run / "checkpoint.safetensors")
    assert ckpt.model == vaefunc.VAE.from_dict(config["model"]) and ckpt.params["encoder.0.weight"].shape == (3, 8, 64)
    assert vaefunc.TrainConfig.from_dict(config["train"]).beta == (0.5, 1.0, 4.0)
    rate, distortion = (float(v) for v in out[3].split()[4:6])
    assert cli.main(["sweep", "--out", str(run), "--resume", "--epochs", "2"]) == 0  # one more epoch
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["model"], r["beta"]) for r in rows] == [(e, i, b) for e in (1, 2)
                                                                   for i, b in enumerate((0.5, 1.0, 4.0))]  # fmt: skip
    assert rows[1]["test_kl"] == pytest.approx(rate, abs=0.006) and -rows[1]["test_recon"] == pytest.approx(
        distortion, abs=0.006)  # the table's epoch-1 numbers, rounded to 2 decimals  # fmt: skip
    # Model 1 (beta 1) is the model `train` makes with the same flags: one vmapped step, the same batches and noise.
    assert cli.main(["train", *args, "--epochs", "2", "--out", str(tmp_path / "one")]) == 0
    one, both = vaefunc.load(tmp_path / "one" / "checkpoint.safetensors"), vaefunc.load(run / "checkpoint.safetensors")
    for k, v in one.params.items():
        assert_close(both.params[k][1], v, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--k", "0", "--json"]) == 2
    assert "holds a sweep of 3 models; pick one with --member I" in capsys.readouterr().err
    assert cli.main(["eval", str(run), "--member", "1", "--k", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["elbo"] == pytest.approx(rows[4]["test_elbo"], rel=1e-9)
    assert cli.main(["train", "--out", str(run), "--resume"]) == 2
    assert "is a sweep of 3 models; resume it with: vaefunc sweep --out" in capsys.readouterr().err


def test_sweep_lists_must_agree(capsys, tmp_path, monkeypatch):
    argv = ["sweep", "--beta", "1", "2", "--lr", "0.1", "0.2", "0.3"]
    test_bad_arguments_in_process(argv, "got 2 values of --beta, 3 values of --lr", capsys, tmp_path, monkeypatch)
    assert not (tmp_path / "runs").exists()


def test_a_non_finite_loss_exits_1_and_keeps_the_last_finite_params(workdir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    run = tmp_path / "nan"
    argv = ["train", "--data", "tiny.npz", "--epochs", "2", *TINY, "--progress", "never", "--lr", "1e8",
            "--likelihood", "gaussian", "--learn-obs-std", "pixel", "--out", str(run)]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "became non-finite" in err[0] and "last_finite.safetensors" in err[0], err
    last = vaefunc.load(run / "last_finite.safetensors")
    assert last.model == vaefunc.VAE.from_dict(json.loads((run / "config.json").read_text())["model"])
    assert all(bool(torch.isfinite(v).all()) for v in last.params.values())


# ---------------------------------------------------------------- runs written by vaefunc 0.1

FIXTURES = ROOT / "tests" / "fixtures"


# How far params trained on another machine may be from the fixture's. The fixture was trained with one
# thread on one CPU; another CPU, thread count or torch version may pick other matmul kernels and sum in
# another order, and those last-bit differences grow through Adam's steps: an AMD EPYC (torch 2.13 and
# 2.14) ended 3.7e-9 away in 1 element of 16. One epoch of training moves every tensor by more than 1e-2,
# so 1e-5 still fails a resume that drew other batches or noise. Bit-exactness is checked only within
# this process (below), where it holds.
ACROSS_MACHINES = {"rtol": 0.0, "atol": 1e-5}


def test_an_old_run_resumes_bit_for_bit(tmp_path, capsys):
    """tests/fixtures/run-v0.1 (flat config.json, no spec in its checkpoint, tanh in its config only),
    resumed to 2 epochs, ends on the params vaefunc 0.1 trained in 2 epochs (to float rounding across
    machines); resumed again, it continues bit for bit as one resume straight to 3 epochs does."""
    from safetensors.torch import load_file

    run, straight = tmp_path / "run-v0.1", tmp_path / "straight"
    shutil.copytree(FIXTURES / "run-v0.1", run)
    shutil.copytree(FIXTURES / "run-v0.1", straight)
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "2", "--progress", "never"]) == 0
    assert "trained 64-8-2 (tanh) on digits (1433 train / 364 test examples) for 2 epochs" in capsys.readouterr().out
    ckpt = vaefunc.load(run / "checkpoint.safetensors")
    expected = load_file(FIXTURES / "run-v0.1-epoch2-params.safetensors")
    epoch1 = vaefunc.load(FIXTURES / "run-v0.1" / "checkpoint.safetensors").params
    assert ckpt.params.keys() == expected.keys()
    for k, v in expected.items():
        assert_close(ckpt.params[k], v, **ACROSS_MACHINES)
        assert not torch.allclose(epoch1[k], v, **ACROSS_MACHINES)  # the tolerance tells epochs apart
    config, row = run_rows(run)  # rewritten in this version's layout, the first command kept
    assert ckpt.model == vaefunc.VAE.from_dict(config["model"]) and ckpt.model.activation == "tanh"
    assert config["command"].endswith("--out run-v0.1 --progress never") and "--resume" in config["resumed_with"]
    assert row["epoch"] == 2 and config["train"]["epochs"] == 2
    # Within this process: 1 -> 2 -> 3 epochs equals 1 -> 3, bit for bit.
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3", "--progress", "never"]) == 0
    assert cli.main(["train", "--out", str(straight), "--resume", "--epochs", "3", "--progress", "never"]) == 0
    two_steps, one_step = (vaefunc.load(r / "checkpoint.safetensors").params for r in (run, straight))
    for k, v in one_step.items():
        assert_close(two_steps[k], v, rtol=0, atol=0)


def test_an_old_runs_config_json_sets_up_a_new_run(tmp_path, capsys):
    """--config reads vaefunc 0.1's flat config.json too: the new run is the old one (tanh, batch 64, 1 epoch)."""
    run = tmp_path / "again"
    assert cli.main(["train", "--config", str(FIXTURES / "run-v0.1" / "config.json"), "--out", str(run),
                     "--progress", "never"]) == 0  # fmt: skip
    assert "trained 64-8-2 (tanh) on digits (1433 train / 364 test examples) for 1 epoch in" in capsys.readouterr().out
    again, old = vaefunc.load(run / "checkpoint.safetensors"), vaefunc.load(FIXTURES / "run-v0.1" / "checkpoint.safetensors")
    assert again.model.activation == "tanh" and again.state.epoch == 1
    for k, v in old.params.items():
        assert_close(again.params[k], v, **ACROSS_MACHINES)  # the fixture was trained on another machine


def test_commands_read_an_old_run(tmp_path, capsys):
    run = FIXTURES / "run-v0.1"
    assert cli.main(["eval", str(run), "--k", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    _, row = run_rows(run)
    assert result["n"] == 364 and result["data"] == "digits"
    assert result["elbo"] == pytest.approx(row["test_elbo"], rel=1e-6)  # vaefunc 0.1 summed in float64
    for name, args, size in (("sample", ["--n", "12", "--cols", "4"], grid(3, 4)), ("traverse", [], grid(2, 11)),
                             ("reconstruct", ["--n", "3"], grid(2, 3))):  # fmt: skip
        assert cli.main([name, str(run), *args, "--out", str(tmp_path / "p.png")]) == 0
        assert grid_of(tmp_path / "p.png") == size
    assert cli.main(["eval", str(run), "--activation", "relu"]) == 2  # its config names tanh
    assert "--activation relu differs from the tanh" in capsys.readouterr().err


def test_an_iwae_sweep_trains_one_model_per_value_given(tmp_path, capsys, monkeypatch):
    """--objective iwae takes beta 1, so the default list of betas does not make identical models: a sweep
    has as many models as its longest --beta, --lr or --seed list in the settings."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", *DIGITS, "--objective", "iwae", "--seed", "0", "1", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("vaefunc: trained 2 models")
    assert vaefunc.load(tmp_path / "s" / "checkpoint.safetensors").params["encoder.0.weight"].shape[0] == 2
