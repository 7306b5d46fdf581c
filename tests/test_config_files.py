"""``vaefunc train --config FILE`` and ``vaefunc sweep --config FILE``: JSON (a run's config.json) or TOML
settings in sections, overridden by the flags given; unknown keys are an error naming them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import vaefunc
from vaefunc import cli
from vaefunc.cli import settings as cli_settings

TINY = ["--data", "digits", "--limit", "64", "--latent-dim", "2", "--hidden", "16", "--batch-size", "16",
        "--epochs", "1", "--progress", "never"]  # fmt: skip
needs_toml = pytest.mark.skipif(sys.version_info < (3, 11) and not __import__("importlib").util.find_spec("tomli"),
                                reason="TOML needs tomllib (Python >= 3.11) or tomli")  # fmt: skip


def settings_of(argv: list[str]) -> cli_settings.Settings:
    """A new run's settings as ``vaefunc train/sweep`` makes them, the --config file read first."""
    args = cli.build_parser().parse_args(argv)
    args.argv, args.given = argv, cli.given(argv)
    cli_settings.apply_file(args)
    return cli_settings.from_args(args)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_runs_config_json_trains_the_same_run_again(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--activation", "tanh", "--kl-schedule", "warmup:10", "--out", "a"]) == 0
    assert cli.main(["train", "--config", "a/config.json", "--out", "b"]) == 0
    first, again = (json.loads(Path(run, "config.json").read_text()) for run in ("a", "b"))
    for section in ("model", "train", "data", "preset"):
        assert again[section] == first[section], section
    a, b = vaefunc.load("a/checkpoint.safetensors"), vaefunc.load("b/checkpoint.safetensors")
    assert a.model == b.model and all(torch.equal(a.params[k], b.params[k]) for k in a.params)  # same seed, same run


def test_flags_given_override_the_file(tmp_path):
    config = write(tmp_path / "c.json", json.dumps({
        "model": {"latent_dim": 7, "hidden": [32, 16], "activation": "tanh"},
        "train": {"epochs": 3, "lr": 0.002, "adam_eps": 1e-6, "seed": 4},
        "data": {"name": "digits", "limit": 100}}))  # fmt: skip
    s = settings_of(["train", "--config", str(config), "--latent-dim", "3", "--epochs", "5"])
    assert (s.model["latent_dim"], s.model["hidden"], s.model["activation"]) == (3, (32, 16), "tanh")
    assert (s.config.epochs, s.config.lr, s.config.adam_eps, s.config.seed) == (5, 0.002, 1e-6, 4)
    assert (s.data["name"], s.data["limit"]) == ("digits", 100)
    assert settings_of(["train", "--config", str(config), "--data", "mnist5k"]).data["name"] == "mnist5k"


@needs_toml
def test_a_toml_file_with_a_preset(tmp_path):
    config = write(tmp_path / "run.toml", """
preset = "iwae-paper"

[model]
latent_dim = 10
learn_obs_std = "none"

[train]
epochs = 4
k = 3
binarize = "none"
lr_schedule = "none"

[data]
name = "digits"
""")
    s = settings_of(["train", "--config", str(config)])
    assert s.preset == "iwae-paper" and (s.model["latent_dim"], s.model["hidden"]) == (10, (200, 200))
    assert (s.config.objective, s.config.k, s.config.epochs) == ("iwae", 3, 4)  # the file over its preset
    assert (s.config.binarize, s.config.lr_schedule, s.model["learn_obs_std"]) == (None, None, None)  # "none": None
    assert s.config.batch_size == 20 and s.data["name"] == "digits"  # the preset's, where the file says nothing


def test_precedence_file_preset_file_flag_preset_flags(tmp_path):
    config = write(tmp_path / "c.json", json.dumps({"preset": "iwae-paper", "model": {"latent_dim": 10},
                                                    "train": {"batch_size": 64, "epochs": 7}}))  # fmt: skip
    s = settings_of(["train", "--config", str(config)])
    assert (s.preset, s.model["latent_dim"], s.config.batch_size, s.config.k) == ("iwae-paper", 10, 64, 50)
    s = settings_of(["train", "--config", str(config), "--preset", "iwae-paper-vae", "--epochs", "2"])
    # --preset overrides the file's fields it names (its latent_dim, batch size and epochs), a flag overrides it
    assert (s.preset, s.model["latent_dim"], s.config.batch_size, s.config.epochs) == ("iwae-paper-vae", 50, 20, 2)
    assert s.config.objective == "elbo"


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ({"model": {"latnet_dim": 3}, "train": {"epoch": 2}}, ".json", "unknown keys model.latnet_dim, train.epoch"),
        ({"modle": {}}, ".json", "unknown keys modle"),
        ({"data": {"path": "x"}}, ".json", "unknown keys data.path"),
        ({"preset": "nope"}, ".json", "unknown preset 'nope'"),
        ({"model": [1, 2]}, ".json", "model must be a section of settings"),
        ({"train": {"activation": "tanh"}}, ".json", "train.activation belongs in the model section"),
        ([1, 2], ".json", "must hold an object with sections model, train, data, preset"),
        ("{not json", ".json", "not valid JSON"),
        ("model = [", ".toml", "not valid TOML"),
        ({"train": {"device": "tpu"}}, ".json", "train.device must be auto, cpu or cuda"),
    ],
)
def test_a_bad_file_is_one_line_naming_what_is_wrong(content, suffix, message, tmp_path, capsys, monkeypatch):
    if suffix == ".toml" and sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / f"c{suffix}", content if isinstance(content, str) else json.dumps(content))
    assert cli.main(["train", "--config", str(path), "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaefunc train: error: --config") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_missing_file_and_a_resume_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--config", "missing.json"]) == 2
    assert "--config missing.json: cannot read it" in capsys.readouterr().err
    write(tmp_path / "c.json", "{}")
    assert cli.main(["train", "--config", "c.json", "--out", "run", "--resume"]) == 2
    assert "a resumed run keeps the settings of its config.json" in capsys.readouterr().err


def test_the_files_device_and_progress_stand_in_for_the_flags(tmp_path):
    config = write(tmp_path / "c.json", json.dumps({"train": {"device": "cpu", "progress": False,
                                                              "distributed": False}}))  # fmt: skip
    args = cli.build_parser().parse_args(argv := ["train", "--config", str(config)])
    args.argv, args.given = argv, cli.given(argv)
    cli_settings.apply_file(args)
    assert (args.device, args.progress) == ("cpu", "never")
    args = cli.build_parser().parse_args(argv := ["train", "--config", str(config), "--progress", "always"])
    args.argv, args.given = argv, cli.given(argv)
    cli_settings.apply_file(args)
    assert args.progress == "always"


def test_a_sweep_reads_its_lists_from_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "s.json", json.dumps({"train": {"beta": [0.5, 2.0], "lr": 0.002}}))
    s = settings_of(["sweep", "--config", "s.json"])
    assert (s.config.beta, s.config.lr, cli_settings.members_of(s.config)) == ((0.5, 2.0), 0.002, 2)
    assert cli.main(["sweep", *TINY, "--config", "s.json", "--out", "sw"]) == 0
    config = json.loads(Path("sw/config.json").read_text())
    assert config["train"]["beta"] == [0.5, 2.0] and "2 models" in capsys.readouterr().out
    assert cli.main(["sweep", "--config", "sw/config.json", "--out", "again"]) == 0  # a sweep's config.json too
    assert json.loads(Path("again/config.json").read_text())["train"] == config["train"]


@needs_toml
def test_the_readmes_toml_example_reads_as_it_says(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = text.split("```toml\n")[1:]
    assert blocks, "the README shows a TOML --config file"
    config = write(tmp_path / "run.toml", blocks[0].split("```")[0])
    s = settings_of(["train", "--config", str(config)])
    assert (s.preset, s.model["latent_dim"], s.config.epochs, s.config.k, s.config.binarize) == (
        "iwae-paper", 10, 20, 5, None)
    assert s.data["name"] == "digits"
