"""``vaefunc train --log tensorboard``: each epoch's scalars and the pictures go to a SummaryWriter on the run
directory. The tensorboard package is not a test dependency (it brings grpcio and protobuf), so these tests
put a recording SummaryWriter in its place; the last one uses the real package where it is installed."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from vaefunc import cli
from vaefunc.cli import rundir

TINY = ["--data", "digits", "--limit", "64", "--latent-dim", "2", "--hidden", "16", "--batch-size", "16",
        "--progress", "never"]  # fmt: skip


class FakeWriter:
    """Records what vaefunc writes through torch.utils.tensorboard.SummaryWriter's interface."""

    made: list[FakeWriter] = []

    def __init__(self, log_dir=None, purge_step=None):
        self.log_dir, self.purge_step = log_dir, purge_step
        self.scalars, self.images, self.closed = {}, {}, False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, global_step=None):
        self.scalars.setdefault(tag, []).append((global_step, float(value)))

    def add_image(self, tag, img, global_step=None, dataformats="CHW"):
        self.images[tag] = (global_step, np.asarray(img).shape, dataformats)

    def flush(self):
        pass

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    FakeWriter.made = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    return FakeWriter.made


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_each_epoch_and_the_pictures_go_to_tensorboard(fake_tensorboard, tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--epochs", "2", "--log", "tensorboard", "--out", "run"]) == 0
    (writer,) = fake_tensorboard
    assert Path(writer.log_dir).resolve() == (tmp_path / "run").resolve() and writer.purge_step is None
    assert writer.closed
    for key in ("loss", "elbo", "recon", "kl"):
        for split in ("train", "test"):
            assert writer.scalars[f"{split}/{key}"] == [(r["epoch"], r[f"{split}_{key}"]) for r in rows(tmp_path / "run")]
    assert [step for step, _ in writer.scalars["speed/examples_per_s"]] == [1, 2]
    assert sorted(writer.images) == sorted(Path(name).stem for name in rundir.PICTURES)
    for name in rundir.PICTURES:
        with Image.open(tmp_path / "run" / name) as img:
            assert writer.images[Path(name).stem] == (2, (img.height, img.width, 3), "HWC")


def test_a_resumed_run_purges_what_followed_its_checkpoint(fake_tensorboard, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", "run"]) == 0  # no --log: no writer
    assert fake_tensorboard == []
    assert cli.main(["train", "--out", "run", "--resume", "--epochs", "2", "--log", "tensorboard"]) == 0
    (writer,) = fake_tensorboard
    assert writer.purge_step == 2 and writer.scalars["test/elbo"] == [(2, rows(tmp_path / "run")[-1]["test_elbo"])]


def test_without_the_package_it_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if it were not installed
    assert cli.main(["train", *TINY, "--log", "tensorboard", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert err == ("vaefunc train: error: --log tensorboard needs the tensorboard package: "
                   "pip install tensorboard (in a vaefunc checkout: pip install -e \".[tensorboard]\")\n")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_the_real_event_files_read_back(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--epochs", "2", "--log", "tensorboard", "--out", "run"]) == 0
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    events.Reload()
    want = [(r["epoch"], r["test_elbo"]) for r in rows(tmp_path / "run")]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events.Scalars("test/elbo")] == want
    assert set(events.Tags()["images"]) == {Path(name).stem for name in rundir.PICTURES}
