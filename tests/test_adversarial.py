"""Hostile and careless input, by class: each gets a clear TypeError/ValueError (or CheckpointError,
DatasetError) naming what was expected, before any work; nothing crashes, hangs or returns garbage.

Crash cases run in a subprocess, so a regression fails its test instead of killing the suite.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib

import numpy as np
import pytest
import torch

import vaefunc
from vaefunc.data import DatasetError

F64 = torch.float64
MODEL = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))


def _params(model=MODEL, dtype=torch.float32):
    return model.init(seed=0, dtype=dtype)


def _x(n=32, dtype=torch.float32, d=16):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _in_subprocess(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------ crashes: foreign optimizer and training states


@pytest.mark.parametrize("entry", ["train opt_state", "train resume", "train_many opt_state"])
def test_a_foreign_optimizer_state_is_refused_not_a_crash(entry):
    """Adam state of a model of another shape: once a segfault or heap corruption in the fused kernel."""
    result = _in_subprocess(f"""
        import torch, vaefunc
        small, big = vaefunc.VAE((16,), latent_dim=2, hidden=(8,)), vaefunc.VAE((16,), latent_dim=2, hidden=(64,))
        x = torch.rand(256, 16)
        foreign = vaefunc.adam(1e-3).init(big.init())
        entry = {entry!r}
        try:
            if entry == "train opt_state":
                vaefunc.train(small.init(), x, model=small, opt_state=foreign, progress=False, epochs=1)
            elif entry == "train resume":
                state = vaefunc.train(big.init(), x, model=big, epochs=1, progress=False).state
                vaefunc.train(small.init(), x, model=small, resume=state._replace(params=small.init()), progress=False)
            else:
                stacked = vaefunc.init_many(2, model=small)
                vaefunc.train_many(stacked, x, model=small, opt_state=vaefunc.adam(1e-3).init(vaefunc.init_many(2, model=big)),
                                   epochs=1, progress=False)
        except ValueError as e:
            print("ValueError:", e)
    """)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ValueError: opt_state: optimizer state 'encoder.0.weight' is" in result.stdout, result.stdout


@pytest.mark.parametrize("module", ["vaefunc.__main__", "os", "builtins"])
def test_a_checkpoint_naming_a_module_never_imports_it(module, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    params = _params()
    path = vaefunc.save(tmp_path / "c.safetensors", params, model=MODEL, opt_state=vaefunc.adam(1e-3).init(params))
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    metadata["tree"] = metadata["tree"].replace("vaefunc.optim:AdamState", f"{module}:AdamState")
    save_file(load_file(path), path, metadata=metadata)
    before = set(sys.modules)
    with pytest.raises(vaefunc.CheckpointError, match="only vaefunc's own"):
        vaefunc.load(path)
    assert "vaefunc.__main__" not in set(sys.modules) - before


@pytest.mark.parametrize("content", [b"hello, this is text\n" * 10, b"\x80\x04\x95" + b"\0" * 40, b"PK\x03\x04" * 5])
def test_a_file_that_is_not_a_checkpoint_says_so(content, tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(content)
    with pytest.raises(vaefunc.CheckpointError, match="not a safetensors checkpoint"):
        vaefunc.load(path)


# ------------------------------------------------------------------ sizes, counts and seeds out of range


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: MODEL.log_likelihood(_params(), _x(2), k=2**64), ValueError, r"k must be a positive int of at most"),
        (lambda: MODEL.log_likelihood(_params(), _x(2), k=4, chunk=2**64), ValueError, r"chunk must be a positive int"),
        (lambda: MODEL.log_likelihood(_params(), _x(2), k=4, batch_size=0), ValueError, r"batch_size must be a positive int"),
        (lambda: MODEL.log_likelihood(_params(), _x(2), k=4, seed=-1), ValueError, r"seed must be an int >= 0"),
        (lambda: MODEL.sample(_params(), 10**9), ValueError, r"n must be a positive int of at most"),
        (lambda: MODEL.sample(_params(), 2, seed=2**64), ValueError, r"seed must be an int >= 0 \(at most 2\*\*63 - 1\)"),
        (lambda: vaefunc.VAE((16,)).init(-1), ValueError, r"seed must be an int >= 0"),
        (lambda: vaefunc.data.load("digits", seed=-1), ValueError, r"seed must be an int >= 0"),
        (lambda: vaefunc.train(_params(), _x(), seed=2**64, progress=False), ValueError, r"seed must be an int >= 0"),
        (lambda: vaefunc.VAE((16,), hidden=400).init(), TypeError, r"hidden must be a sequence of ints, e\.g\. \(400,\); got 400"),
        (lambda: vaefunc.VAE((16,), latent_dim=True).init(), ValueError, r"latent_dim must be a positive int; got True"),
        (lambda: vaefunc.VAE((16,)).init(dtype="float32"), TypeError, r"dtype must be a torch.dtype such as torch.float32"),
        (lambda: vaefunc.init_many(0, (16,)), ValueError, r"m must be a positive int; got 0"),
    ],
)  # fmt: skip
def test_counts_and_seeds_out_of_range_are_refused_at_once(call, error, match):
    t0 = time.perf_counter()
    with pytest.raises(error, match=match):
        call()
    assert time.perf_counter() - t0 < 5.0


# ------------------------------------------------------------------ silent garbage from the pure functions


def _bad_x_cases():
    x = _x(4)
    return {
        "uint8 0..255": ((x * 255).to(torch.uint8), TypeError, r"x must be a floating-point tensor"),
        "above 1": (x * 3, ValueError, r"x must lie in \[0, 1\] for the bernoulli likelihood"),
        "below 0": (x - 0.5, ValueError, r"x must lie in \[0, 1\]"),
        "nan": (x.masked_fill(x > 0.9, math.nan), ValueError, r"x must be finite; got \d+ NaN or inf"),
        "bool": (x > 0.5, TypeError, r"floating-point"),
        "complex": (x.to(torch.complex64), TypeError, r"floating-point"),
        "float16": (x.half(), TypeError, r"x must have the params' dtype torch.float32; got torch.float16"),
        "bfloat16": (x.bfloat16(), TypeError, r"params' dtype"),
        "float64 for float32 params": (x.double(), TypeError, r"params' dtype"),
    }


BAD_X = _bad_x_cases()


@pytest.mark.parametrize("fn", ["elbo", "iwae", "log_weights"])
@pytest.mark.parametrize("case", list(BAD_X))
def test_bad_data_is_refused_by_the_pure_functions(fn, case):
    x, error, match = BAD_X[case]
    params = _params()
    eps = torch.randn(3, 4, 2) if fn != "elbo" else torch.randn(4, 2)
    with pytest.raises(error, match=match):
        getattr(MODEL, fn)(params, x, eps)


@pytest.mark.parametrize("case", [c for c in BAD_X if not c.endswith("params")])
def test_bad_data_is_refused_by_the_estimates(case):
    x, error, match = BAD_X[case]
    if case.startswith(("float16", "bfloat16")):  # the estimate converts floats to the params' dtype
        pytest.skip("a float x is converted, as log_likelihood always did")
    with pytest.raises(error, match=match.replace("x must be a floating-point tensor", "floating-point")):
        MODEL.log_likelihood(_params(), x, k=2)
    with pytest.raises((TypeError, ValueError)):
        vaefunc.metrics.dataset_elbo(_params(), x) if not x.is_floating_point() else vaefunc.anomaly_score(
            _params(), x, k=2)  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.tensor([0, 1, 5, 2]), r"labels must lie in \[0, 3\); got values in \[0, 5\]"),
        (torch.tensor([0, -1, 1, 2]), r"must lie in \[0, 3\)"),
        (torch.full((4, 3), 1 / 3), r"one-hot labels must be rows of 0s with a single 1"),
        (torch.tensor([[1.0, 1.0, 0.0]] * 4), r"single 1"),
        (torch.tensor([0, 1]), r"integer labels must have shape \(4,\)"),
    ],
)
def test_bad_labels_are_refused_not_zero_rows(labels, match):
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,), n_classes=3)
    params = model.init()
    with pytest.raises(ValueError, match=match):
        model.elbo(params, _x(4), torch.randn(4, 2), labels)
    with pytest.raises(ValueError, match=match):
        model.iwae(params, _x(4), torch.randn(2, 4, 2), labels)
    with pytest.raises(ValueError, match=match):
        model.log_likelihood(params, _x(4), labels, k=2)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"eps": torch.full((4, 2), math.inf)}, ValueError, r"eps must be finite"),
        ({"beta": math.nan}, ValueError, r"beta must be a finite number >= 0.0; got nan"),
        ({"beta": -1.0}, ValueError, r"beta must be a finite number >= 0.0"),
        ({"beta": torch.tensor(-2.0)}, ValueError, r"beta must be finite and >= 0"),
        ({"likelihood": "gaussian", "obs_std": 0.0}, ValueError, r"obs_std must be a finite number > 0.0"),
        ({"likelihood": "gaussian", "obs_std": -1.0}, ValueError, r"obs_std must be a finite number > 0.0"),
    ],
)  # fmt: skip
def test_bad_noise_and_weights_are_refused(kw, error, match):
    kw = {"eps": torch.randn(4, 2)} | kw
    static = {k: kw.pop(k) for k in ("likelihood", "obs_std") if k in kw}
    with pytest.raises(error, match=match):
        vaefunc.VAE((16,), latent_dim=2, hidden=(8,), **static).elbo(_params(), _x(4), kw.pop("eps"), **kw)


def test_nan_in_z_is_refused_by_decode_through_the_spec():
    with pytest.raises(TypeError, match="z must be a floating-point tensor"):
        MODEL.decode(_params(), torch.zeros(2, 2, dtype=torch.int64))


def test_the_value_checks_stand_aside_under_transforms():
    """vmap and grad of the checked functions still work (the checks cannot read batched values)."""
    params, x, eps = _params(dtype=F64), _x(4, F64), torch.randn(4, 2, dtype=F64)
    per = torch.func.vmap(lambda xi, ei: MODEL.elbo(params, xi[None], ei[None])[0])(x, eps)
    torch.testing.assert_close(per, MODEL.elbo(params, x, eps))
    grads = torch.func.grad(lambda p: MODEL.elbo(p, x, eps).sum())(params)
    assert set(grads) == set(params)


# ------------------------------------------------------------------ params that are not the model's


@pytest.mark.parametrize("where", ["train", "train_many", "save", "to_module"])
def test_params_with_an_extra_key_are_refused(where, tmp_path):
    params = _params() | {"decoder.9.scale": torch.ones(3)}
    with pytest.raises(ValueError, match=r"decoder.9.scale"):
        if where == "train":
            vaefunc.train(params, _x(), epochs=1, progress=False)
        elif where == "train_many":
            vaefunc.train_many(vaefunc.stack([params, params]), _x(), epochs=1, progress=False)
        elif where == "save":
            vaefunc.save(tmp_path / "c.safetensors", params, model=MODEL)
        else:
            vaefunc.to_module(params)


def test_a_layer_missing_its_weight_is_not_a_shallower_network():
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8, 8))
    params = model.init()
    del params["encoder.2.weight"]
    for call in (lambda: model.encode(params, _x(2)), lambda: vaefunc.train(params, _x(), progress=False)):
        with pytest.raises(ValueError, match=r"missing \['encoder.2.weight'\]"):
            call()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"step": 6}, r"resume.step must be an int in \[0, 2\]"),
        ({"step": -3}, r"resume.step must be an int in \[0, 2\]"),
        ({"epoch": 5}, r"resume.epoch must be an int in \[0, epochs=2\]"),
        ({"sums": torch.zeros(3)}, r"resume.sums must be a tensor of shape \(4,\)"),
        ({"rng": {"data": torch.zeros(3, dtype=torch.uint8)}}, r"generator state"),
    ],
)
def test_a_resume_state_outside_the_run_is_refused(change, match):
    first = vaefunc.train(_params(), _x(), epochs=1, batch_size=16, progress=False)
    with pytest.raises((ValueError, KeyError), match=match):
        vaefunc.train(_params(), _x(), epochs=2, batch_size=16, progress=False, resume=first.state._replace(**change))


# ------------------------------------------------------------------ data files: bombs, huge headers, bit depths


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setenv("VAEFUNC_MAX_DATA_BYTES", str(2**26))  # 64 MiB: the tests' bombs stay small


def test_a_gzip_bomb_is_refused_in_under_a_second(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(b"\0" * 2**28, compresslevel=9))  # 256 MiB of zeros in ~260 kB
    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match="decompression bomb"):
        vaefunc.data.load(path)
    assert time.perf_counter() - t0 < 1.0


def test_an_idx_gzip_over_the_limit_is_refused(tmp_path, small_limit):
    header = struct.pack(">I", 0x0803) + struct.pack(">3I", 100_000, 28, 28)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(2**27), compresslevel=1))
    with pytest.raises(DatasetError, match="over the 0.0625 GiB limit|decompression bomb"):
        vaefunc.data.load(path)


def test_an_npy_header_declaring_90_tib_is_refused_before_allocating(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 22500)})
    path = tmp_path / "x.npy"
    path.write_bytes(buf.getvalue() + b"\0" * 64)
    with pytest.raises(DatasetError, match=r"the header declares a .* array of .* GiB, over the"):
        vaefunc.data.load(path)


def test_an_npz_member_over_the_limit_is_refused(tmp_path, small_limit):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.save(buf, np.zeros((2**26 // 784 + 10, 784), dtype=np.uint8))
        z.writestr("images.npy", buf.getvalue())
    with pytest.raises(DatasetError, match="over the 0.0625 GiB limit"):
        vaefunc.data.load(path)


def _png(width: int, height: int, bit_depth: int = 8, pixels: bytes | None = None) -> bytes:
    """A grayscale PNG; with no pixels, a header that declares the size and a tiny, truncated body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    body = zlib.compress(pixels if pixels is not None else b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_a_20000_by_20000_png_is_refused_in_under_a_second(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png(20000, 20000))
    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match="decompression bomb|over the"):
        vaefunc.data.load(folder)
    assert time.perf_counter() - t0 < 1.0


def test_16_bit_pngs_are_scaled_by_their_bit_depth(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    values = np.array([[0, 16384], [32768, 65535]], dtype=">u2")
    rows = b"".join(b"\0" + values[r].tobytes() for r in range(2))  # filter byte 0 per row
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(_png(2, 2, bit_depth=16, pixels=rows))
    x = vaefunc.data.load(folder, split="all").images
    torch.testing.assert_close(x[0, 0], torch.tensor([[0.0, 16384 / 65535], [32768 / 65535, 1.0]]))


def test_an_idx_file_with_a_zero_dimension_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", 0x0803) + struct.pack(">3I", 0, 28, 28))
    with pytest.raises(DatasetError, match="zero dimension"):
        vaefunc.data.load(path)


# ------------------------------------------------------------------ the command line and its run directory

DIGITS = ["--data", "digits", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--limit", "200",
          "--batch-size", "32", "--progress", "never"]  # fmt: skip


def _cli(argv, capsys):
    from vaefunc import cli

    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def trained_run(tmp_path, monkeypatch):
    from vaefunc import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *DIGITS, "--epochs", "2", "--out", "run"]) == 0
    return tmp_path / "run"


def test_a_second_process_on_the_same_run_fails_at_once(trained_run, capsys):
    from vaefunc.cli.rundir import Lock

    held = Lock(trained_run)  # another process training or resuming this run
    try:
        code, err = _cli(["train", *DIGITS, "--out", str(trained_run), "--resume", "--epochs", "3"], capsys)
        assert code == 2 and "is in use by vaefunc (pid" in err and err.count("\n") == 1, err
        fresh = trained_run.parent / "fresh"
        with Lock(fresh):  # a fresh run's folder taken while the other still validates its flags
            code, err = _cli(["train", *DIGITS, "--out", str(fresh)], capsys)
        assert code == 2 and "is in use by vaefunc (pid" in err, err
    finally:
        held.release()
    assert _cli(["train", *DIGITS, "--out", str(trained_run), "--resume", "--epochs", "3"], capsys)[0] == 0


def test_stale_temporary_files_are_removed_by_the_next_start(trained_run, capsys):
    stale = trained_run / ".checkpoint.safetensors.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert _cli(["train", *DIGITS, "--out", str(trained_run), "--resume", "--epochs", "3"], capsys)[0] == 0
    assert not stale.exists()


def test_a_corrupt_config_names_the_file_and_what_to_do(trained_run, capsys):
    (trained_run / "config.json").write_text('{"model": {"latent_dim": 2', encoding="utf-8")
    code, err = _cli(["train", *DIGITS, "--out", str(trained_run), "--resume", "--epochs", "3"], capsys)
    assert code == 2 and "config.json is corrupt" in err and "another --out" in err and err.count("\n") == 1


def test_a_torn_last_metrics_line_is_dropped_not_fatal(trained_run, capsys):
    import json

    path = trained_run / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[:1]) + "\n" + lines[1][:20], encoding="utf-8")  # killed mid-write
    assert _cli(["train", *DIGITS, "--out", str(trained_run), "--resume", "--epochs", "3"], capsys)[0] == 0
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in rows] == [1, 3]  # epoch 2's torn line dropped; the resumed epoch written
    path.write_text("not json\n" + path.read_text(encoding="utf-8"), encoding="utf-8")  # corrupt, not the last
    code, err = _cli(["train", *DIGITS, "--out", str(trained_run), "--resume", "--epochs", "4"], capsys)
    assert code == 2 and "metrics.jsonl: line 1 is corrupt" in err


PARSER, CHECKED = "argparse", "checked"


@pytest.mark.parametrize(
    ("argv", "where", "message"),
    [
        (["train", "--out", ""], CHECKED, "--out must name a folder; got an empty path"),
        (["train", "--out", "afile"], CHECKED, "--out afile: is a file, not a folder"),
        (["train", "--out", "afile/run"], CHECKED, "afile is a file, so no folder can be made under it"),
        (["train", "--out", "readonly/run"], CHECKED, "readonly is not writable"),
        (["train", "--seed", str(2**64)], PARSER, "expected an integer from 0 to 2**63 - 1"),
        (["sample", "run", "--out", "adir"], CHECKED, "expected a .png file to write, not a folder"),
        (["sample", "run", "--n", "100000000"], PARSER, "expected an integer from 1 to 10000"),
        (["traverse", "run", "--range", "1e308"], PARSER, "expected a number in (0, 100]"),
        (["train", "--out", "run", "--resume", "--epochs", "1"], CHECKED,
         "has trained 2 epochs; --epochs 1 would end before"),
    ],
)  # fmt: skip
def test_bad_command_lines_are_one_line_and_exit_2_before_any_data(argv, where, message, trained_run, capsys,
                                                                    monkeypatch):  # fmt: skip
    import os

    from vaefunc import cli

    (trained_run.parent / "afile").write_text("x")
    (trained_run.parent / "adir").mkdir()
    (trained_run.parent / "readonly").mkdir(mode=0o500)
    if os.access(trained_run.parent / "readonly", os.W_OK) and "readonly" in argv[-1]:
        pytest.skip("running as a user who may write anywhere (root ignores permissions)")
    loads = []
    monkeypatch.setattr(vaefunc.data, "load", lambda *a, **k: loads.append(1))
    if where == PARSER:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    else:
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not loads


def test_a_dead_peer_is_one_line_from_the_command_line(monkeypatch, capsys):
    from vaefunc import cli
    from vaefunc.distributed import DistributedError

    def died(args):
        raise DistributedError("rank 1 of 2: the gradient all_reduce failed; another rank probably died")

    monkeypatch.setitem(cli.COMMANDS, "train", died)
    code, err = _cli(["train"], capsys)
    assert code == 1 and err == "vaefunc train: error: rank 1 of 2: the gradient all_reduce failed; another rank probably died\n"


# The console script pip writes for ``vaefunc = "vaefunc._launch:main"`` (the name matters: the launcher
# knows the command by it), and python -m vaefunc: the two ways the command starts.
CONSOLE_SCRIPT = """import re, sys
from vaefunc._launch import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


@pytest.mark.parametrize(("entry", "signum", "code", "line"), [
    ("console script", "SIGINT", 130, "vaefunc: interrupted while starting up\n"),
    ("python -m vaefunc", "SIGTERM", 143, "vaefunc: terminated (SIGTERM) while starting up\n"),
])  # fmt: skip
def test_a_signal_while_the_command_starts_up_is_one_line_and_128_plus_its_number(entry, signum, code, line, tmp_path):
    import os
    import signal
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = tmp_path / "vaefunc"
    script.write_text(CONSOLE_SCRIPT)
    launcher = [sys.executable, str(script)] if entry == "console script" else [sys.executable, "-m", "vaefunc"]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([*launcher, "train", "--out", str(tmp_path / "run")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    time.sleep(0.3)  # Python is up; torch is still importing
    p.send_signal(getattr(signal, signum))
    _, err = p.communicate(timeout=120)
    assert p.returncode == code and err == line, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: MODEL.elbo(_params(), _x(4), torch.randn(4, 3)), ValueError, r"eps must have shape \(b, z\) = \(4, 2\)"),
        (lambda: MODEL.elbo(_params(), _x(4), torch.randn(2)), ValueError, r"eps must have shape"),
        (lambda: vaefunc.VAE((784,), hidden=(10**9,)).init(), ValueError, r"the params would take .* GiB"),
        (lambda: vaefunc.init_many(10**5, (784,)), ValueError, r"the params would take .* GiB"),
        (lambda: vaefunc.init_many(2**64, (16,)), ValueError, r"m must be a positive int of at most"),
        (lambda: vaefunc.VAE((16,), latent_dim=2**64).init(), ValueError, r"latent_dim must be a positive int of at most"),
        (lambda: vaefunc.train(_params(), _x(), device="tpu"), ValueError, r"device must be a torch device"),
        (lambda: vaefunc.train(_params(), _x(), kl_schedule="linear:9"), ValueError, r"kl_schedule: expected warmup"),
        (lambda: vaefunc.train(_params(), _x(), lr_schedule="iwae-paper:x"), ValueError, r"lr_schedule must be None or"),
        (lambda: vaefunc.metrics.dataset_elbo(_params(), _x() * 3), ValueError, r"x must lie in \[0, 1\]"),
        (lambda: vaefunc.metrics.kl_per_dim(_params(), _x().masked_fill(_x() > 0.9, math.nan)), ValueError, r"x must be finite"),
    ],
)  # fmt: skip
def test_shapes_sizes_and_settings_found_by_the_adversarial_pass(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_label_for_an_unconditional_model_is_refused_by_the_picture_commands(trained_run, capsys):
    for command in ("sample", "traverse"):
        code, err = _cli([command, str(trained_run), "--label", "3", "--out", str(trained_run / "p.png")], capsys)
        assert code == 2 and "--label is for a conditional model" in err
