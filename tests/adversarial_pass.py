"""An adversarial pass over vaefunc's public surface: hundreds of bad inputs, each classified.

    python -m tests.adversarial_pass            # prints the table; --json for the raw outcomes

Every case is an input that must be refused. Outcomes:

- clear: a TypeError/ValueError (CheckpointError, DatasetError and UsageError are ValueErrors; the
  command line's exit 2 with one line) whose message names what was wrong;
- unclear: refused, but by another exception, or a message that does not name the argument;
- silent: no error (a number or a file came back);
- crash: the process died (a signal: segfault, abort);
- hang: no answer within the case's time limit.

Cases run in a child process, one area at a time; a crash restarts the child after the case that
killed it. Not a test (no assertion): tests/test_adversarial.py holds one test per class.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

AREAS = ("pure functions", "train and train_many", "checkpoints", "data files", "command line")
LIMIT_S = 20


def _cases_pure(torch, vaefunc):
    """(name, callable, words one of which the message must hold)."""
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    cond = vaefunc.VAE((16,), latent_dim=2, hidden=(8,), n_classes=3)
    p, pc = model.init(), cond.init()
    x = torch.rand(4, 16)
    eps, eps_k = torch.randn(4, 2), torch.randn(3, 4, 2)
    bad_x = {"uint8": (x * 255).to(torch.uint8), "int64": (x * 9).long(), "bool": x > 0.5,
             "complex": x.to(torch.complex64), "float16": x.half(), "bfloat16": x.bfloat16(), "float64": x.double(),
             "nan": x.masked_fill(x > 0.8, math.nan), "inf": x.masked_fill(x > 0.8, math.inf), "above 1": x * 3,
             "below 0": x - 1, "wrong width": torch.rand(4, 15), "1-d": torch.rand(16), "list": x.tolist(),
             "numpy": x.numpy(), "None": None, "string": "x"}  # fmt: skip
    funcs = {
        "elbo": lambda v: vaefunc.elbo(p, v, eps), "iwae": lambda v: vaefunc.iwae(p, v, eps_k),
        "log_weights": lambda v: vaefunc.log_weights(p, v, eps_k), "log_likelihood": lambda v: vaefunc.log_likelihood(p, v, k=2),
        "anomaly_score": lambda v: vaefunc.anomaly_score(p, v, k=2), "dataset_elbo": lambda v: vaefunc.metrics.dataset_elbo(p, v),
        "kl_per_dim": lambda v: vaefunc.metrics.kl_per_dim(p, v), "model.elbo": lambda v: model.elbo(p, v, eps),
        "model.iwae": lambda v: model.iwae(p, v, eps_k), "model.log_weights": lambda v: model.log_weights(p, v, eps_k),
        "model.log_likelihood": lambda v: model.log_likelihood(p, v, k=2),
    }  # fmt: skip
    converting = ("log_likelihood", "anomaly_score", "dataset_elbo", "kl_per_dim", "model.log_likelihood")
    for fname, fn in funcs.items():
        for xname, v in bad_x.items():
            if fname in converting and xname in ("float16", "bfloat16", "float64"):
                continue  # the estimates and metrics convert a float x to the params' dtype, as documented
            yield f"{fname}(x={xname})", (lambda fn=fn, v=v: fn(v)), ("x", "data", "features", "shape")
    for ename, e in {"nan": torch.full((4, 2), math.nan), "wrong shape": torch.randn(4, 3), "int": torch.ones(4, 2).long(),
                     "float64": torch.randn(4, 2).double(), "1-d": torch.randn(2)}.items():  # fmt: skip
        yield f"elbo(eps={ename})", (lambda e=e: vaefunc.elbo(p, x, e)), ("eps",)
        yield f"iwae(eps={ename})", (lambda e=e: vaefunc.iwae(p, x, e)), ("eps",)
    for bname, b in {"nan": math.nan, "-1": -1.0, "inf": math.inf, "string": "1", "tensor -1": torch.tensor(-1.0),
                     "None": None}.items():  # fmt: skip
        yield f"elbo(beta={bname})", (lambda b=b: vaefunc.elbo(p, x, eps, beta=b)), ("beta",)
    bad_labels = {"5 of 3": torch.tensor([0, 1, 5, 2]), "-1": torch.tensor([0, -1, 1, 2]), "fractional": torch.full((4, 3), 1 / 3),
                  "multi-hot": torch.ones(4, 3), "short": torch.tensor([0, 1]), "bool": torch.ones(4, dtype=torch.bool),
                  "strings": ["a", "b", "c", "d"], "nan one-hot": torch.full((4, 3), math.nan), "missing": None}  # fmt: skip
    for lname, lab in bad_labels.items():
        yield f"elbo(labels={lname})", (lambda lab=lab: vaefunc.elbo(pc, x, eps, labels=lab)), ("label",)
        yield f"iwae(labels={lname})", (lambda lab=lab: vaefunc.iwae(pc, x, eps_k, labels=lab)), ("label",)
        yield f"log_likelihood(labels={lname})", (lambda lab=lab: vaefunc.log_likelihood(pc, x, labels=lab, k=2)), ("label",)
        yield f"sample(labels={lname})", (lambda lab=lab: cond.sample(pc, 4, labels=lab) if lab is not None else
                                         cond.sample(pc, 4)), ("label",)  # fmt: skip
    yield "elbo(unconditional, labels)", (lambda: vaefunc.elbo(p, x, eps, labels=torch.zeros(4).long())), ("label",)
    from vaefunc.traversal import traversal

    counts = {"0": 0, "-1": -1, "2**64": 2**64, "1.5": 1.5, "True": True, "'3'": "3", "None": None}
    for name, value in counts.items():
        seedlike = name != "0"  # 0 is a good seed
        yield f"log_likelihood(k={name})", (lambda v=value: vaefunc.log_likelihood(p, x, k=v)), ("k",)
        if name != "None":  # chunk=None is the default
            yield f"log_likelihood(chunk={name})", (lambda v=value: vaefunc.log_likelihood(p, x, k=4, chunk=v)), ("chunk",)
        yield f"log_likelihood(batch_size={name})", (lambda v=value: vaefunc.log_likelihood(p, x, k=4, batch_size=v)), ("batch_size",)
        yield f"sample(n={name})", (lambda v=value: vaefunc.sample(p, v)), ("n",)
        if seedlike:
            yield f"sample(seed={name})", (lambda v=value: vaefunc.sample(p, 2, seed=v)), ("seed",)
            yield f"init(seed={name})", (lambda v=value: vaefunc.VAE((16,)).init(v)), ("seed",)
        yield f"init(latent_dim={name})", (lambda v=value: vaefunc.VAE((16,), latent_dim=v).init()), ("latent_dim",)
        yield f"init_many(m={name})", (lambda v=value: vaefunc.init_many(v, (16,))), ("m",)
        yield f"traversal(steps={name})", (lambda v=value: traversal(p, None, steps=v)), ("steps",)
    yield "init(hidden=(10**9,))", (lambda: vaefunc.VAE((784,), hidden=(10**9,)).init()), ("GiB",)
    yield "init_many(10**5, 784-400-20)", (lambda: vaefunc.init_many(10**5, (784,))), ("GiB",)
    for name, value in {"hidden=400": {"hidden": 400}, "hidden=(4,-1)": {"hidden": (4, -1)}, "dtype str": {"dtype": "float32"},
                        "dtype int": {"dtype": torch.int64}, "input_shape ()": {"input_shape": ()},
                        "arch rnn": {"arch": "rnn"}, "channels mlp": {"channels": (8,)}}.items():  # fmt: skip
        kw = {"input_shape": (16,)} | value
        yield f"init({name})", (lambda kw=kw: vaefunc.init(**kw)), tuple(value)
    for name, value in {"activation": {"activation": "sigmoid"}, "likelihood": {"likelihood": "poisson"},
                        "obs_std 0": {"likelihood": "gaussian", "obs_std": 0.0}, "obs_std -1": {"likelihood": "gaussian", "obs_std": -1.0},
                        "obs_std nan": {"likelihood": "gaussian", "obs_std": math.nan},
                        "prior": {"prior": "laplace"}, "learn without gaussian": {"learn_obs_std": "pixel"},
                        "components 0": {"prior": "mog", "prior_components": 0}}.items():  # fmt: skip
        yield f"VAE({name})", (lambda v=value: vaefunc.VAE((16,), **v)), tuple(k for k in value if k != "likelihood" or len(value) == 1)
        static = {k: w for k, w in value.items() if k in ("activation", "likelihood", "obs_std")}
        if static != {"likelihood": "gaussian"} and static:  # the rest are spec-only fields
            yield f"elbo({name})", (lambda v=static: vaefunc.elbo(p, x, eps, **v)), tuple(static)
    extra = p | {"extra": torch.zeros(2)}
    no_w = {k: v for k, v in vaefunc.VAE((16,), hidden=(8, 8)).init().items() if k != "encoder.2.weight"}
    yield "to_module(extra key)", (lambda: vaefunc.to_module(extra)), ("extra",)
    yield "encode(missing encoder.2.weight)", (lambda: vaefunc.encode(no_w, x)), ("encoder.2.weight",)
    yield "encode(params list)", (lambda: vaefunc.encode(list(p.values()), x)), ("params",)


def _cases_train(torch, vaefunc):
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    p, x = model.init(), torch.rand(64, 16)
    kw = {"epochs": 1, "batch_size": 16, "progress": False}
    settings = {"epochs": [-1, 1.5, "2", None], "batch_size": [0, 65, -1, 2.0], "lr": [0, -1, math.nan, math.inf, "1e-3", [1e-3, 2e-3]],
                "beta": [-1, math.nan, "big", [1, 2]], "kl_schedule": ["linear:10", 0.5, "warmup:-3"], "objective": ["vae", None],
                "k": [0, -2, 2.5], "binarize": ["soft", True], "seed": [-1, 2**64, 1.5, [1, 2]], "compile": ["yes", 2],
                "device": ["tpu", 3], "progress": ["sometimes", 2], "tf32": ["yes"], "autocast": ["fp8"],
                "lr_schedule": ["cosine", "iwae-paper:x"], "adam_b1": [1.0, -0.1], "adam_eps": [-1e-8],
                "distributed": ["yes"], "activation": ["sigmoid"], "likelihood": ["poisson"], "epoch": [3]}  # fmt: skip
    for name, values in settings.items():
        for v in values:
            yield f"train({name}={v!r})", (lambda name=name, v=v: vaefunc.train(p, x, **(kw | {name: v}))), (name.split("_")[0],)
    big = vaefunc.VAE((16,), latent_dim=2, hidden=(32,))
    foreign = vaefunc.adam(1e-3).init(big.init())
    state = vaefunc.train(p, x, **kw).state
    for name, call, words in [
        ("opt_state of another model", lambda: vaefunc.train(p, x, opt_state=foreign, **kw), ("opt_state",)),
        ("opt_state 'adam'", lambda: vaefunc.train(p, x, opt_state="adam", **kw), ("opt_state",)),
        ("resume step 99", lambda: vaefunc.train(p, x, resume=state._replace(step=99), **kw), ("step",)),
        ("resume step -3", lambda: vaefunc.train(p, x, resume=state._replace(step=-3), **kw), ("step",)),
        ("resume epoch 5 of 1", lambda: vaefunc.train(p, x, resume=state._replace(epoch=5), **kw), ("epoch",)),
        ("resume bad rng", lambda: vaefunc.train(p, x, resume=state._replace(rng={"data": torch.zeros(3, dtype=torch.uint8),
                                                   "noise": torch.zeros(3, dtype=torch.uint8), "binarize": torch.zeros(3, dtype=torch.uint8)}), **kw), ("generator",)),
        ("resume a dict", lambda: vaefunc.train(p, x, resume={"epoch": 1}, **kw), ("resume",)),
        ("params extra key", lambda: vaefunc.train(p | {"x": torch.ones(1)}, x, **kw), ("x",)),
        ("data uint8", lambda: vaefunc.train(p, (x * 255).to(torch.uint8), **kw), ("data",)),
        ("data nan", lambda: vaefunc.train(p, x.masked_fill(x > 0.9, math.nan), **kw), ("data",)),
        ("data above 1", lambda: vaefunc.train(p, x * 2, **kw), ("data",)),
        ("data empty", lambda: vaefunc.train(p, x[:0], **kw), ("data",)),
        ("data width", lambda: vaefunc.train(p, x[:, :15], **kw), ("data", "features")),
        ("labels for unconditional", lambda: vaefunc.train(p, x, labels=torch.zeros(64).long(), **kw), ("label",)),
        ("model conflicting", lambda: vaefunc.train(p, x, model=model, activation="tanh", **kw), ("activation",)),
        ("model of another shape", lambda: vaefunc.train(p, x, model=big, **kw), ("params", "shape")),
        ("model not a spec", lambda: vaefunc.train(p, x, model={"latent_dim": 2}, **kw), ("model",)),
        ("config a dict", lambda: vaefunc.train(p, x, config={"epochs": 1}), ("config",)),
        ("on_epoch not callable", lambda: vaefunc.train(p, x, on_epoch=3, **kw), ("on_epoch",)),
        ("train_many lr count", lambda: vaefunc.train_many(vaefunc.init_many(3, model=model), x, lr=[1e-3, 1e-3], **kw), ("lr",)),
        ("train_many seed count", lambda: vaefunc.train_many(vaefunc.init_many(3, model=model), x, seed=[1, 2], **kw), ("seed",)),
        ("train_many foreign opt_state", lambda: vaefunc.train_many(vaefunc.init_many(2, model=model), x,
                                                                      opt_state=vaefunc.adam(1e-3).init(vaefunc.init_many(2, model=big)), **kw), ("opt_state",)),
        ("train_many unstacked", lambda: vaefunc.train_many(p, x, **kw), ("leading", "ensemble", "axis")),
    ]:  # fmt: skip
        yield f"train({name})", call, words


def _cases_checkpoints(torch, vaefunc, tmp):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    p = model.init()
    good = vaefunc.save(tmp / "good.safetensors", p, model=model, opt_state=vaefunc.adam(1e-3).init(p))
    raw = good.read_bytes()
    with safe_open(good, "pt") as f:
        meta = f.metadata()

    def with_meta(name, **changes):
        path = tmp / f"{name}.safetensors"
        save_file(load_file(good), path, metadata=meta | changes)
        return path

    def raw_file(name, data):
        path = tmp / name
        path.write_bytes(data)
        return path

    files = {
        "text": raw_file("t.safetensors", b"hello\n" * 50), "pickle": raw_file("p.safetensors", b"\x80\x04\x95" + bytes(64)),
        "zip": raw_file("z.safetensors", b"PK\x03\x04" + bytes(64)), "empty": raw_file("e.safetensors", b""),
        "truncated": raw_file("tr.safetensors", raw[: len(raw) // 2]), "header cut": raw_file("hc.safetensors", raw[:40]),
        "header not json": raw_file("hj.safetensors", raw[:8] + b"!" * (len(raw) - 8)),
        "module vaefunc.__main__": with_meta("m1", tree=meta["tree"].replace("vaefunc.optim:AdamState", "vaefunc.__main__:AdamState")),
        "module os": with_meta("m2", tree=meta["tree"].replace("vaefunc.optim:AdamState", "os:system")),
        "fields renamed": with_meta("m3", tree=meta["tree"].replace('"count"', '"counter"')),
        "tree not json": with_meta("m4", tree="{not json"), "tree missing tensor": with_meta("m5", tree=meta["tree"].replace("params.encoder.0.weight", "params.gone")),
        "version 99": with_meta("m6", version="99"), "model unknown key": with_meta("m7", model='{"input_shape": [16], "latent_dims": 2}'),
        "model of another shape": with_meta("m8", model=json.dumps(vaefunc.VAE((16,), latent_dim=3).to_dict())),
        "model bad activation": with_meta("m9", model=json.dumps(model.to_dict() | {"activation": "sigmoid"})),
        "config latent_dim wrong": with_meta("m10", config='{"latent_dim": 5}'),
        "config activation bad": with_meta("m11", config='{"activation": "sigmoid"}'),
        "members absurd": with_meta("m12", members="7"),
    }  # fmt: skip
    for name, path in files.items():
        yield f"load({name})", (lambda path=path: vaefunc.load(path)), ("checkpoint", "safetensors", "model", "config",
                                                                       "params", "format", "newer", "state type", "tensor", "corrupt")
    yield "load(a folder)", (lambda: vaefunc.load(tmp)), ("checkpoint",)
    yield "load(missing)", (lambda: vaefunc.load(tmp / "nope.safetensors")), ("checkpoint",)
    yield "save(opt_state of another model)", (lambda: vaefunc.save(tmp / "x.safetensors", p, opt_state=vaefunc.adam(1e-3).init(
        vaefunc.VAE((16,), hidden=(4,)).init()))), ("opt_state", "optimizer")  # fmt: skip
    yield "save(config not JSON)", (lambda: vaefunc.save(tmp / "x.safetensors", p, config={"f": object()})), ("config",)
    yield "save(model of another shape)", (lambda: vaefunc.save(tmp / "x.safetensors", p, model=vaefunc.VAE((16,), latent_dim=3))), ("params", "shape")


def _cases_data(torch, vaefunc, tmp):
    import gzip
    import io
    import struct
    import zipfile
    import zlib

    import numpy as np

    def write(name, data):
        path = tmp / name
        path.write_bytes(data)
        return path

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 22500)})

    def png(w, h, depth=8, pixels=None):
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        body = zlib.compress(pixels if pixels is not None else b"\0" * 16)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)) + chunk(b"IDAT", body) + chunk(b"IEND", b"")

    def folder(name, files):
        path = tmp / name
        path.mkdir()
        for fname, data in files.items():
            (path / fname).write_bytes(data)
        return path

    npz = tmp / "big.npz"
    with zipfile.ZipFile(npz, "w", compression=zipfile.ZIP_DEFLATED) as z:
        b2 = io.BytesIO()
        np.save(b2, np.zeros((100_000, 784), dtype=np.uint8))
        z.writestr("images.npy", b2.getvalue())
    mixed = np.zeros((2, 2), np.uint8)
    paths = {
        "gzip bomb pkl": write("bomb.pkl.gz", gzip.compress(b"\0" * 2**28, 9)),
        "gzip bomb idx": write("train-images-idx3-ubyte.gz", gzip.compress(struct.pack(">I3I", 0x0803, 10**6, 28, 28) + bytes(2**27), 1)),
        "npy 90 TiB header": write("huge.npy", buf.getvalue() + bytes(64)),
        "npz member over limit": npz,
        "png 20000x20000": folder("huge_png", {"a.png": png(20000, 20000)}),
        "png corrupt": folder("bad_png", {"a.png": b"\x89PNG\r\n\x1a\nnot really"}),
        "pngs of mixed sizes": folder("mixed", {"a.png": png(2, 2, pixels=b"\0\0\0\0\0\0"), "b.png": png(3, 2, pixels=b"\0" * 8)}),
        "idx zero dimension": write("z-images-idx3-ubyte", struct.pack(">I3I", 0x0803, 0, 28, 28)),
        "idx wrong magic": write("w-images-idx3-ubyte", struct.pack(">I3I", 0x0801, 1, 2, 2) + bytes(4)),
        "idx truncated": write("t-images-idx3-ubyte", struct.pack(">I3I", 0x0803, 10, 28, 28) + bytes(100)),
        "pickle that runs code": write("evil.pkl", b"cos\nsystem\n(S'echo pwned'\ntR."),
        "pickle truncated": write("cut.pkl", b"\x80\x04\x95\x10"),
        "npy object array": write("obj.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (2,), }" + b" " * 40 + b"\n"),
        "npz without images": write("keys.npz", (lambda b: (np.savez(b, foo=mixed, bar=mixed), b.getvalue())[1])(io.BytesIO())),
        "npy float above 1": write("big_vals.npy", (lambda b: (np.save(b, np.full((3, 4, 4), 5.0)), b.getvalue())[1])(io.BytesIO())),
    }  # fmt: skip
    os.environ["VAEFUNC_MAX_DATA_BYTES"] = str(2**26)
    for name, path in paths.items():
        yield f"data.load({name})", (lambda path=path: vaefunc.data.load(path, split="all")), (
            "bomb", "limit", "GiB", "corrupt", "truncated", "size", "magic", "zero", "pickle", "refusing", "images", "[0, 1]", "object")
    for name, kw in {"unknown name": {"name_or_path": "mnist"}, "missing file": {"name_or_path": tmp / "nope.npz"},
                     "split": {"name_or_path": "digits", "split": "val"}, "limit 0": {"name_or_path": "digits", "limit": 0},
                     "seed -1": {"name_or_path": "digits", "seed": -1}, "binarize": {"name_or_path": "digits", "binarize": "soft"},
                     "path int": {"name_or_path": 3}}.items():  # fmt: skip
        yield f"data.load({name})", (lambda kw=kw: vaefunc.data.load(**kw)), ("mnist", "no such", "split", "limit", "seed",
                                                                             "binarize", "name_or_path")


def _cases_cli(torch, vaefunc, tmp):
    run = tmp / "run"
    base = ["--data", "digits", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--limit", "200", "--progress", "never"]
    (tmp / "afile").write_text("x")
    (tmp / "adir").mkdir()
    argvs = {
        "no command": [], "unknown command": ["fit"], "unknown flag": ["train", "--epoch", "3"],
        "--epochs -1": ["train", "--epochs", "-1"], "--lr 0": ["train", "--lr", "0"], "--lr nan": ["train", "--lr", "nan"],
        "--beta -1": ["train", "--beta", "-1"], "--seed 2**64": ["train", "--seed", str(2**64)], "--seed -1": ["train", "--seed", "-1"],
        "--batch-size 0": ["train", "--batch-size", "0"], "--batch-size 10**6": ["train", *base, "--batch-size", str(10**6)],
        "--kl-schedule bad": ["train", "--kl-schedule", "linear:9"], "--likelihood poisson": ["train", "--likelihood", "poisson"],
        "--k with elbo": ["train", *base, "--k", "3"], "--out ''": ["train", "--out", ""], "--out a file": ["train", "--out", str(tmp / "afile")],
        "--out under a file": ["train", "--out", str(tmp / "afile" / "run")], "--resume without --out": ["train", "--resume"],
        "--resume of nothing": ["train", "--out", str(tmp / "adir"), "--resume"],
        "--resume --epochs below": ["train", *base, "--out", str(run), "--resume", "--epochs", "0"],
        "--resume changed flag": ["train", *base, "--out", str(run), "--resume", "--latent-dim", "5"],
        "--n-classes without labels": ["train", "--n-classes", "3", "--data", str(tmp / "adir")],
        "--arch conv on flat data": ["train", "--arch", "conv", "--data", "digits", "--size", "7"],
        "--data unknown": ["train", "--data", "mnist"], "--device cuda": ["train", "--device", "cuda"],
        "sweep lengths": ["sweep", *base, "--beta", "1", "2", "--lr", "1e-3", "2e-3", "3e-3"],
        "eval missing run": ["eval", str(tmp / "nope")], "eval a file": ["eval", str(tmp / "afile")],
        "eval --k -1": ["eval", str(run), "--k", "-1"], "eval --member 5": ["eval", str(run), "--member", "5"],
        "eval --activation other": ["eval", str(run), "--activation", "gelu"],
        "sample --n 10**8": ["sample", str(run), "--n", str(10**8)], "sample --out a folder": ["sample", str(run), "--out", str(tmp / "adir")],
        "sample --label 3": ["sample", str(run), "--label", "3"], "traverse --range 1e308": ["traverse", str(run), "--range", "1e308"],
        "traverse --steps 1": ["traverse", str(run), "--steps", "1"], "interpolate --pairs 0": ["interpolate", str(run), "--pairs", "0"],
        "reconstruct --data other": ["reconstruct", str(run), "--data", "mnist5k"],
    }  # fmt: skip
    first = subprocess.run([sys.executable, "-m", "vaefunc", "train", *base, "--out", str(run)], capture_output=True, timeout=120)
    assert first.returncode == 0, first.stderr
    for name, argv in argvs.items():
        yield f"vaefunc {name}", ("cli", argv), ()


def _run_cli(argv):
    r = subprocess.run([sys.executable, "-m", "vaefunc", *argv], capture_output=True, text=True, timeout=LIMIT_S * 3)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if r.returncode < 0:
        return "crash", r.stderr[-200:]
    if r.returncode == 0:
        return "silent", r.stdout[-200:]
    clear = r.returncode in (1, 2) and len(lines) == 1 and "Traceback" not in r.stderr
    return ("clear" if clear else "unclear"), r.stderr[-300:]


class _Hang(Exception):
    pass


def _child(area: str, skip: int) -> None:
    """Run the area's cases from number ``skip`` on, one JSON line per case (started, then its outcome)."""
    import torch

    import vaefunc

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    make = {"pure functions": lambda: _cases_pure(torch, vaefunc), "train and train_many": lambda: _cases_train(torch, vaefunc),
            "checkpoints": lambda: _cases_checkpoints(torch, vaefunc, tmp), "data files": lambda: _cases_data(torch, vaefunc, tmp),
            "command line": lambda: _cases_cli(torch, vaefunc, tmp)}[area]  # fmt: skip
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(_Hang()))
    for i, (name, call, words) in enumerate(make()):
        if i < skip:
            continue
        print(json.dumps({"i": i, "name": name, "started": True}), flush=True)
        signal.alarm(LIMIT_S)
        try:
            if isinstance(call, tuple):
                outcome, detail = _run_cli(call[1])
            else:
                value = call()
                outcome, detail = "silent", repr(value)[:100]
        except _Hang:
            outcome, detail = "hang", ""
        except (TypeError, ValueError, FileNotFoundError) as e:
            named = not words or any(w.lower() in str(e).lower() for w in words)
            outcome, detail = ("clear" if named else "unclear"), f"{type(e).__name__}: {e}"[:300]
        except Exception as e:  # noqa: BLE001  (anything else is an unclear refusal)
            outcome, detail = "unclear", f"{type(e).__name__}: {e}"[:300]
        finally:
            signal.alarm(0)
        print(json.dumps({"i": i, "name": name, "outcome": outcome, "detail": detail}), flush=True)


def run_area(area: str) -> list[dict]:
    results, skip = [], 0
    while True:
        proc = subprocess.run([sys.executable, "-m", "tests.adversarial_pass", "--child", area, str(skip)],
                              capture_output=True, text=True, timeout=3600, cwd=Path(__file__).parent.parent)  # fmt: skip
        started = None
        for line in proc.stdout.splitlines():
            row = json.loads(line)
            if row.get("started"):
                started = row
            else:
                results.append(row)
                started = None
        if proc.returncode == 0:
            return results
        if started is None:
            raise RuntimeError(f"the {area} child failed outside a case:\n{proc.stderr[-2000:]}")
        results.append({"i": started["i"], "name": started["name"], "outcome": "crash", "detail": proc.stderr[-300:]})
        skip = started["i"] + 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        _child(argv[1], int(argv[2]))
        return 0
    table, everything = [], {}
    for area in AREAS:
        rows = run_area(area)
        everything[area] = rows
        counts = {k: sum(r["outcome"] == k for r in rows) for k in ("clear", "unclear", "silent", "crash", "hang")}
        table.append((area, len(rows), counts))
    if "--json" in argv:
        print(json.dumps(everything, indent=1))
        return 0
    print("| area | inputs tried | clear error | unclear | silent | crash | hang |\n|---|---:|---:|---:|---:|---:|---:|")
    for area, n, c in table:
        print(f"| {area} | {n} | {c['clear']} | {c['unclear']} | {c['silent']} | {c['crash']} | {c['hang']} |")
    total = [sum(t[1] for t in table)] + [sum(t[2][k] for t in table) for k in ("clear", "unclear", "silent", "crash", "hang")]
    print(f"| all | {' | '.join(map(str, total))} |")
    for area, rows in everything.items():
        for r in rows:
            if r["outcome"] != "clear":
                print(f"  {area}: {r['outcome']}: {r['name']}: {r['detail'][:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
