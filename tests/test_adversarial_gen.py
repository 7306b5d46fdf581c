"""Generated hostile input for the public functions, and a subprocess group for hangs and memory.

Hypothesis draws one public call, one of its arguments and a hostile value for it (a dtype x shape x
value x type product: tensors and arrays of every dtype and odd shapes filled with NaN, inf, huge or
negative numbers; None, bools, huge ints, NaN floats, strings, lists, dicts, params of another model
or with a key missing...). Each call is classified:

- ``correct``: it returned, the argument was valid, and the result has the reference call's
  structure (the same tensors, trailing shapes and dtypes), finite where the input was finite;
- ``clear``: it raised ValueError or TypeError whose message names the argument;
- ``unclear``: any other exception, a message that does not name the argument, or a valid value refused;
- ``silent``: an invalid value accepted, or a result of the wrong structure, non-finite from finite input;
- ``hang``: a call that took over 10 s (the subprocess group below runs the bombs with real timeouts).

The test fails on ``unclear``, ``silent`` and ``hang``. The spec methods are pure functions that stay
usable under torch.compile and vmap, so they check shapes and dtypes without a host sync; NaN or inf
values in a tensor they are given propagate to NaN in the result (``correct`` when the result is
non-finite exactly where the input was), while the host-side functions (anomaly_score, log_likelihood,
augment, save) refuse them.

Profiles: by default (CI) a few derandomized examples per group, well within 60 s; the ``adversarial``
marker's tests (``python -m pytest -m adversarial tests/test_adversarial_gen.py``) draw 300 examples per
group (``VAEFUNC_ADVERSARIAL_EXAMPLES`` sets another count) and run every bomb of the subprocess group.
``VAEFUNC_ADVERSARIAL_COUNTS=FILE`` writes the outcome counts per class and per group as JSON.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import vaefunc

MODEL = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
OTHER = vaefunc.VAE((16,), latent_dim=3, hidden=(8,))
N = 3
LONG = int(os.getenv("VAEFUNC_ADVERSARIAL_EXAMPLES", "300"))
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
SURVEY = bool(os.getenv("VAEFUNC_ADVERSARIAL_SURVEY"))  # count every outcome, fail on none (to measure)
CLASSES = ("correct", "clear", "unclear", "silent", "hang")


def _profile(examples: int, derandomize: bool = True):
    return settings(max_examples=examples, deadline=None, derandomize=derandomize, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])  # fmt: skip


CI = _profile(25)
ADVERSARIAL = _profile(LONG, derandomize=not os.getenv("VAEFUNC_ADVERSARIAL_RANDOM"))


@pytest.fixture(scope="module", autouse=True)
def _write_counts():
    yield
    path = os.getenv("VAEFUNC_ADVERSARIAL_COUNTS")
    if path:
        total = collections.Counter()
        for c in COUNTS.values():
            total.update(c)
        out = {"total": {k: total[k] for k in CLASSES}} | {g: {k: c[k] for k in CLASSES} for g, c in COUNTS.items()}
        Path(path).write_text(json.dumps(out, indent=1) + "\n")


# ------------------------------------------------------------------ hostile values

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8,
          torch.bool, torch.complex64]  # fmt: skip
SHAPES = [(), (0,), (N,), (N, 16), (0, 16), (1, 16), (N, 15), (N, 17), (N, 16, 1), (1, N, 16), (N, 2), (N, 3),
          (4, N, 2), (N, 1, 4, 4), (N, 4, 4), (2, N, 16)]  # fmt: skip
FILLS = ["rand", "zeros", "ones", "nan", "inf", "-inf", "huge", "negative", "just_over_one"]


def _tensor(dtype: torch.dtype, shape: tuple[int, ...], fill: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=gen, dtype=torch.float64)
    if fill == "zeros":
        t = torch.zeros(shape, dtype=torch.float64)
    elif fill == "ones":
        t = torch.ones(shape, dtype=torch.float64)
    elif fill in ("nan", "inf", "-inf") and t.numel():
        t = t.clone()
        t.view(-1)[0] = float(fill)
    elif fill == "huge":
        t = t * 1e30
    elif fill == "negative":
        t = -t - 1
    elif fill == "just_over_one" and t.numel():
        t = t.clone()
        t.view(-1)[0] = 1.0000001
    if dtype.is_floating_point or dtype.is_complex:
        return t.to(dtype)
    if dtype == torch.bool:
        return t > 0.5
    return torch.nan_to_num(t, nan=0, posinf=100, neginf=-100).clamp(-100, 100).to(dtype)


@st.composite
def tensors(draw, shapes=SHAPES, dtypes=DTYPES):
    t = _tensor(draw(st.sampled_from(dtypes)), draw(st.sampled_from(shapes)), draw(st.sampled_from(FILLS)),
                draw(st.integers(0, 3)))  # fmt: skip
    kind = draw(st.sampled_from(["tensor", "tensor", "tensor", "numpy", "list", "noncontiguous", "requires_grad"]))
    if kind == "numpy" and t.dtype not in (torch.bfloat16,):
        return t.numpy()
    if kind == "list":
        return t.tolist()
    if kind == "noncontiguous" and t.ndim == 2:
        return t.t().contiguous().t()
    if kind == "requires_grad" and t.is_floating_point():
        return t.clone().requires_grad_(True)
    return t


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2, -1, 2**31, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1e-3, -0.0, 1e300]),
    st.text(max_size=4), st.sampled_from(["", "auto", "nan", "1", "cuda:99", "bogus"]),
    st.builds(np.int64, st.integers(-5, 5)), st.builds(np.float32, st.floats(-2, 2)), st.just(np.uint64(3)),
    st.lists(st.integers(-2, 5), max_size=3), st.tuples(st.integers(0, 3)), st.dictionaries(st.text(max_size=2),
                                                                                            st.integers(), max_size=2),
    st.just(object()), st.just(torch.tensor(3)), st.just(torch.tensor(0.5)), st.just(torch.tensor([1, 2])),
)  # fmt: skip
HOSTILE = st.one_of(SCALARS, tensors())


def _params_variants(model: vaefunc.VAE):
    """Params with one thing wrong (or right): a key missing or extra, a leaf of another shape, dtype,
    device-less kind, NaN, params of another model, stacked params, not a dict."""
    good = model.init()
    key = st.sampled_from(sorted(good))

    def edit(k, how):
        p = {kk: v.clone() for kk, v in good.items()}
        if how == "missing":
            del p[k]
        elif how == "extra":
            p["surplus.weight"] = torch.zeros(2)
        elif how == "shape":
            p[k] = torch.zeros(*p[k].shape, 2)
        elif how == "dtype":
            p[k] = p[k].double()
        elif how == "int":
            p[k] = p[k].long()
        elif how == "nan":
            p[k] = p[k].clone().fill_(math.nan)
        elif how == "numpy":
            p[k] = p[k].numpy()
        elif how == "list":
            p[k] = p[k].tolist()
        elif how == "none":
            p[k] = None
        return p

    hows = ["missing", "extra", "shape", "dtype", "int", "nan", "numpy", "list", "none", "same"]
    return st.one_of(
        st.builds(edit, key, st.sampled_from(hows)),
        st.just(OTHER.init()), st.just(vaefunc.stack([good, good])), st.just({}), st.just([good]),
        st.just(None), st.just("params"), st.just(tuple(good.values())),
    )  # fmt: skip


# ------------------------------------------------------------------ what a valid argument is


def _is_int(v, lo=None, hi=None) -> bool:
    ok = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    return ok and (lo is None or v >= lo) and (hi is None or v <= hi)


def _is_num(v, lo=-math.inf, hi=math.inf, *, strict_lo=False) -> bool:
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    return ok and math.isfinite(v) and (v > lo if strict_lo else v >= lo) and v <= hi


def _tensor_ok(v, shape, dtype=torch.float32) -> tuple[bool, bool]:
    """(structurally valid: a tensor of this dtype and shape, leading dim free; values finite)."""
    if not isinstance(v, torch.Tensor) or v.dtype != dtype or v.ndim != len(shape) or tuple(v.shape[1:]) != shape[1:]:
        return False, False
    if v.shape[0] == 0 and shape[0] != 0:
        return False, False
    return True, bool(torch.isfinite(v).all()) if v.numel() else True


def _params_ok(v, model=MODEL, part="", extra=False, stacked=False) -> tuple[bool, bool]:
    """Valid params: the model's keys (those starting with ``part`` at least, others ignored, when
    ``extra``), float32 tensors of its shapes (with one leading axis when ``stacked``)."""
    shapes = model.param_shapes()
    if not isinstance(v, dict) or not v:
        return False, False
    need = {k for k in shapes if k.startswith(part)}
    if not need <= set(v) or (not extra and set(v) != set(shapes)):
        return False, False
    lead = {t.shape[0] for t in v.values() if isinstance(t, torch.Tensor) and t.ndim}
    for k, t in v.items():
        if k not in shapes:
            continue
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
            return False, False
        got = tuple(t.shape[1:]) if stacked and len(lead) == 1 and t.ndim == len(shapes[k]) + 1 else tuple(t.shape)
        if got != shapes[k]:
            return False, False
    return True, all(bool(torch.isfinite(t).all()) for k, t in v.items() if k in shapes)


def _encoder_params(v):
    return _params_ok(v, part="encoder.", extra=True)


def _decoder_params(v):
    return _params_ok(v, part="decoder.", extra=True)


def _module_params(v):
    """The params-first functions read the model from the params: another model's are valid, extra keys unread."""
    return max(_params_ok(v, extra=True), _params_ok(v, model=OTHER, extra=True))


def _any_params(v):
    return _params_ok(v, extra=True)


def _beta(v):
    if isinstance(v, torch.Tensor):
        ok = not v.is_complex() and v.dtype != torch.bool and v.ndim <= 1 and v.numel() in (1, N)
        return ok, ok and bool((torch.isfinite(v.double()) & (v >= 0)).all())
    return _is_num(v, 0), _is_num(v, 0)


def _beta_overflow(v):
    ok, finite = _beta(v)
    return ok, finite and (not _is_num(v) or v <= 1e30)  # beta * KL overflows float32 past about 1e38


def _broadcastable(*others):
    """A floating-point tensor of any float dtype (torch promotes) whose shape broadcasts with ``others``."""
    def check(v):
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            return False, False
        try:
            torch.broadcast_shapes(v.shape, *others)
        except RuntimeError:
            return False, False
        return True, bool(torch.isfinite(v).all() and (v.abs() < 1e6).all()) if v.numel() else True  # exp() overflows

    return check


def _listed(pred):
    """A number, or numbers in a list/tuple/1-d array or tensor (what TrainConfig's per-model fields take)."""
    def check(v):
        if isinstance(v, (np.ndarray, torch.Tensor)):
            if v.dtype in (torch.bool, np.bool_) or v.ndim > 1 or (isinstance(v, torch.Tensor) and v.is_complex()):
                return False, False
            v = v.tolist()
        if isinstance(v, (list, tuple)):
            ok = len(v) > 0 and all(pred(e) for e in v)
        else:
            ok = pred(v)
        return ok, ok

    return check


def _flattens(shape) -> bool:
    """n examples of 16 features as the network reads them: the last axis, or a trailing block of 16."""
    size = 1
    for k in range(1, len(shape)):
        size *= shape[-k]
        if size == 16 or shape[-1] == 16:
            return True
    return False


def unit(v):  # data for the Bernoulli model: (n, 16) in [0, 1] (or (n, 16, 1), which the network flattens)
    if isinstance(v, torch.Tensor) and v.dtype == torch.float32 and v.ndim == 3 and v.shape[0] == N \
            and math.prod(v.shape[1:]) == 16 and v.shape[-1] != 16:  # fmt: skip
        return True, bool(torch.isfinite(v).all() and ((v >= 0) & (v <= 1)).all())
    ok, finite = _tensor_ok(v, (N, 16))
    return ok, finite and bool(((v >= 0) & (v <= 1)).all()) if ok and v.numel() else finite


def unit_host(v):
    """What the host-side functions take: n examples of 16 features (images of any layout are flattened, as
    for an MLP spec read from the params), any float dtype (converted), in [0, 1]."""
    if isinstance(v, torch.Tensor) and v.is_floating_point() and v.ndim >= 2 and math.prod(v.shape[1:]) == 16 \
            and v.shape[0]:  # fmt: skip
        return True, bool(torch.isfinite(v).all() and ((v >= 0) & (v <= 1)).all())
    return unit(v)


def unit_any(v):  # (..., 16) in [0, 1], what encode takes
    if isinstance(v, torch.Tensor) and v.ndim >= 2 and v.dtype == torch.float32 and _flattens(v.shape) and v.numel():
        return True, bool(torch.isfinite(v).all() and ((v >= 0) & (v <= 1)).all())
    ok, finite = _tensor_ok(v, (N, 16))
    return ok, finite and bool(((v >= 0) & (v <= 1)).all()) if ok and v.numel() else finite


def latent(v):
    return _tensor_ok(v, (N, 2))


def latent_k(v):
    ok, finite = _tensor_ok(v, (4, N, 2)) if isinstance(v, torch.Tensor) and v.ndim == 3 else (False, False)
    return ok, finite


def scalar(pred):
    return lambda v: (pred(v), pred(v))


@dataclasses.dataclass
class Target:
    """A public call: ``call(**kwargs)``, its valid kwargs, a validity test per argument, and names a
    clear error may use for each argument (its own name first)."""

    name: str
    call: object
    valid: dict
    checks: dict
    aliases: dict = dataclasses.field(default_factory=dict)
    pure: bool = False  # a pure tensor function: non-finite values propagate, not refused
    same: object = None  # (result, reference) -> whether the result has the reference's structure
    overflow: tuple = ()  # arguments whose huge values overflow float32 on their way: inf out is no lie


def _x(n=N, seed=0):
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(seed))


def _two_codes(out, ref):
    """encode's (mu, logvar): two tensors of one shape (..., z) (z 3 for OTHER's params)."""
    return isinstance(out, tuple) and len(out) == 2 and out[0].shape == out[1].shape and out[0].shape[-1] in (2, 3)


def _float_tensor(out, ref):
    """A primitive's result: a floating-point tensor of the shape torch's broadcasting gives."""
    return isinstance(out, torch.Tensor) and out.is_floating_point()


P = MODEL.init()
SPEC = [
    Target("VAE.encode", lambda params, x: MODEL.encode(params, x), {"params": P, "x": _x()},
           {"params": _encoder_params, "x": unit_any}, pure=True, same=_two_codes),
    Target("VAE.decode", lambda params, z: MODEL.decode(params, z), {"params": P, "z": torch.zeros(N, 2)},
           {"params": _decoder_params, "z": latent}, pure=True),
    Target("VAE.elbo", lambda params, x, eps, beta: MODEL.elbo(params, x, eps, beta=beta),
           {"params": P, "x": _x(), "eps": torch.zeros(N, 2), "beta": 1.0},
           {"params": _any_params, "x": unit, "eps": latent, "beta": _beta_overflow}, pure=True),
    Target("VAE.elbo_terms", lambda params, x, eps: MODEL.elbo_terms(params, x, eps),
           {"params": P, "x": _x(), "eps": torch.zeros(N, 2)},
           {"params": _any_params, "x": unit, "eps": latent}, pure=True),
    Target("VAE.iwae", lambda params, x, eps: MODEL.iwae(params, x, eps),
           {"params": P, "x": _x(), "eps": torch.zeros(4, N, 2)},
           {"params": _any_params, "x": unit, "eps": latent_k}, pure=True),
    Target("VAE.sample", lambda params, n, seed: MODEL.sample(params, n, seed=seed), {"params": P, "n": 3, "seed": 0},
           {"params": _decoder_params, "n": scalar(lambda v: _is_int(v, 1, 2**24)),
            "seed": scalar(lambda v: _is_int(v, 0, 2**63 - 1))}, pure=True),
    Target("VAE.loss", lambda objective, alpha: MODEL.loss(objective, alpha=alpha), {"objective": "elbo", "alpha": 0.0},
           {"objective": scalar(lambda v: isinstance(v, str) and v in ("elbo", "iwae")),
            "alpha": scalar(lambda v: _is_num(v, 0) and v == 0)}),  # alpha is for semi-supervised models
]
MODULE = [
    Target("vaefunc.elbo", lambda params, x, eps, beta: vaefunc.elbo(params, x, eps, beta=beta),
           {"params": P, "x": _x(), "eps": torch.zeros(N, 2), "beta": 1.0},
           {"params": _module_params, "x": unit, "eps": latent, "beta": _beta_overflow},
           aliases={"params": ("eps",)}, pure=True, overflow=("beta",)),  # params of another latent size: the eps (b, 2) given do not fit them
    Target("vaefunc.encode", lambda params, x: vaefunc.encode(params, x), {"params": P, "x": _x()},
           {"params": _module_params, "x": unit_any}, pure=True, same=_two_codes),
    Target("vaefunc.kl_normal", lambda mu, logvar: vaefunc.kl_normal(mu, logvar),
           {"mu": torch.zeros(N, 2), "logvar": torch.zeros(N, 2)},
           {"mu": _broadcastable((N, 2)), "logvar": _broadcastable((N, 2))}, pure=True, same=_float_tensor),
    Target("vaefunc.reparameterize", lambda mu, logvar, eps: vaefunc.reparameterize(mu, logvar, eps),
           {"mu": torch.zeros(N, 2), "logvar": torch.zeros(N, 2), "eps": torch.zeros(N, 2)},
           {"mu": _broadcastable((N, 2)), "logvar": _broadcastable((N, 2)), "eps": _broadcastable((N, 2))},
           pure=True, same=_float_tensor),
    Target("vaefunc.bernoulli_log_prob", lambda logits, x: vaefunc.bernoulli_log_prob(logits, x),
           {"logits": torch.zeros(N, 16), "x": _x()}, {"logits": _broadcastable((N, 16)), "x": _broadcastable((N, 16))},
           pure=True, same=_float_tensor),
]
HOST = [
    Target("anomaly_score", lambda params, x, score, k, seed, chunk: vaefunc.anomaly_score(
        params, x, score=score, k=k, seed=seed, chunk=chunk, model=MODEL, progress=False),
        {"params": P, "x": _x(), "score": "recon", "k": 2, "seed": 0, "chunk": None},
        {"params": _params_ok, "x": unit_host, "score": scalar(lambda v: isinstance(v, str) and v in ("nll", "recon", "elbo")),
         "k": scalar(lambda v: _is_int(v, 1, 2**30)), "seed": scalar(lambda v: _is_int(v, 0, 2**63 - 1)),
         "chunk": scalar(lambda v: v is None or _is_int(v, 1, 2**30))}),
    Target("log_likelihood", lambda params, x, k, seed, chunk: vaefunc.log_likelihood(
        params, x, k=k, seed=seed, chunk=chunk, model=MODEL, progress=False, compile=False),
        {"params": P, "x": _x(), "k": 2, "seed": 0, "chunk": None},
        {"params": _params_ok, "x": unit_host, "k": scalar(lambda v: _is_int(v, 1, 2**30)),
         "seed": scalar(lambda v: _is_int(v, 0, 2**63 - 1)), "chunk": scalar(lambda v: v is None or _is_int(v, 1, 2**30))}),
    Target("augment", lambda params, x, copies, scale, seed: vaefunc.augment(
        params, model=MODEL, x=x, copies=copies, scale=scale, seed=seed),
        {"params": P, "x": _x(), "copies": 1, "scale": 1.0, "seed": 0},
        {"params": _params_ok, "x": unit_host, "copies": scalar(lambda v: _is_int(v, 1, 2**24)),
         "scale": lambda v: (_is_num(v, 0), _is_num(v, 0, 1e30)), "seed": scalar(lambda v: _is_int(v, 0, 2**63 - 1))},
        overflow=("scale",)),
]  # fmt: skip


def _opt_target(name, factory, valid, checks):
    def call(**kw):
        opt = factory(**kw)
        state = opt.init(P)
        grads = {k: torch.ones_like(v) for k, v in P.items()}
        return opt.update(grads, state, P)[0]

    return Target(name, call, valid, checks, pure=True)  # an lr over float32's range gives inf: propagated


def LR(v):  # noqa: N802  (a learning rate: a positive number, or a 0-d float tensor; over 1e30 overflows float32)
    ok = _is_num(v, 0, strict_lo=True) or (isinstance(v, torch.Tensor) and v.ndim == 0 and v.is_floating_point()
                                           and bool(torch.isfinite(v) & (v > 0)))  # fmt: skip
    return ok, ok and float(v) <= 1e30
UNIT_OPEN = scalar(lambda v: _is_num(v, 0) and v < 1)
OPTIM = [
    _opt_target("adam", vaefunc.adam, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
                {"learning_rate": LR, "b1": UNIT_OPEN, "b2": UNIT_OPEN, "eps": scalar(lambda v: _is_num(v, 0))}),
    _opt_target("sgd", vaefunc.sgd, {"learning_rate": 1e-3}, {"learning_rate": LR}),
    _opt_target("clip_by_global_norm", vaefunc.clip_by_global_norm, {"max_norm": 1.0},
                {"max_norm": scalar(lambda v: _is_num(v, 0, strict_lo=True))}),
]


def _schedule_call(factory):
    def call(**kw):
        sched = factory(**kw)
        fn = sched.beta if hasattr(sched, "beta") else sched
        return fn(torch.tensor(5))

    return call


POS_INT = scalar(lambda v: _is_int(v, 1, 2**62))
SCHED = [
    Target("linear_warmup", _schedule_call(vaefunc.linear_warmup), {"warmup_steps": 10, "beta": 1.0, "start": 0.0},
           {"warmup_steps": POS_INT, "beta": scalar(lambda v: _is_num(v, 0)), "start": scalar(lambda v: _is_num(v, 0))}),
    Target("free_bits", _schedule_call(vaefunc.free_bits), {"lam": 0.5},
           {"lam": scalar(lambda v: _is_num(v, 0, strict_lo=True))}),
    Target("constant_beta", _schedule_call(vaefunc.constant_beta), {"beta": 1.0},
           {"beta": scalar(lambda v: _is_num(v, 0))}),
    Target("capacity_annealing", _schedule_call(vaefunc.capacity_annealing), {"capacity": 5.0, "anneal_steps": 10},
           {"capacity": scalar(lambda v: _is_num(v, 0)), "anneal_steps": POS_INT}),
    Target("iwae_paper_lr", _schedule_call(vaefunc.iwae_paper_lr), {"steps_per_epoch": 10, "base": 1e-3, "stages": 8},
           {"steps_per_epoch": POS_INT, "base": scalar(lambda v: _is_num(v, 0, strict_lo=True)),
            "stages": scalar(lambda v: _is_int(v, 1, 40))}),
]  # fmt: skip


def _config(**kw):
    return vaefunc.TrainConfig(**kw).to_dict()


CONFIG_VALID = {"epochs": 1, "batch_size": 8, "lr": 1e-3, "beta": 1.0, "k": 5, "seed": 0, "adam_b1": 0.9,
                "labelled_share": 0.25, "compile": "auto", "progress": True}  # fmt: skip
CONFIG = [Target("TrainConfig", _config, CONFIG_VALID, same=lambda out, ref: set(out) == set(ref), checks={
    "epochs": scalar(lambda v: _is_int(v, 0, 10**9)), "batch_size": scalar(lambda v: _is_int(v, 1)),
    "lr": _listed(lambda v: _is_num(v, 0, strict_lo=True)), "beta": _listed(lambda v: _is_num(v, 0)),
    "k": scalar(lambda v: _is_int(v, 1, 2**30)), "seed": _listed(lambda v: _is_int(v, 0, 2**63 - 1)),
    "adam_b1": UNIT_OPEN, "labelled_share": scalar(lambda v: _is_num(v, 0, strict_lo=True) and v < 1),
    "compile": scalar(lambda v: v is True or v is False or (isinstance(v, str) and v == "auto")),
    "progress": scalar(lambda v: v is True or v is False or (isinstance(v, str) and v == "always")),
})]  # fmt: skip


def _save_load(tmp, params, model, allow_nonfinite):
    path = vaefunc.save(Path(tmp) / "c.safetensors", params, model=model, allow_nonfinite=allow_nonfinite)
    return vaefunc.load(path, allow_nonfinite=allow_nonfinite).params


def _ok_model(v):
    return isinstance(v, vaefunc.VAE) and v == MODEL


SAVE = [Target("save/load", _save_load, {"tmp": None, "params": P, "model": MODEL, "allow_nonfinite": False},
               {"params": lambda v: _params_ok(v, stacked=True), "model": lambda v: (v is None or _ok_model(v),) * 2,
                "allow_nonfinite": scalar(lambda v: v is True or v is False)})]  # fmt: skip

GROUPS = {"spec": SPEC, "module": MODULE, "host": HOST, "optim": OPTIM, "schedules": SCHED, "config": CONFIG,
          "save": SAVE}  # fmt: skip


# ------------------------------------------------------------------ one call, classified


def _structure(out):
    if isinstance(out, torch.Tensor):
        return ("tensor", out.dtype, tuple(out.shape[1:]) if out.ndim else (), out.ndim)
    if isinstance(out, dict):
        return ("dict", tuple(sorted((k, _structure(v)) for k, v in out.items())))
    if isinstance(out, (tuple, list)):
        return (type(out).__name__, tuple(_structure(v) for v in out))
    return (type(out).__name__,)


def _finite(out) -> bool:
    if isinstance(out, torch.Tensor):
        return not out.is_floating_point() or bool(torch.isfinite(out).all())
    if isinstance(out, dict):
        return all(_finite(v) for v in out.values())
    if isinstance(out, (tuple, list)):
        return all(_finite(v) for v in out)
    if isinstance(out, float):
        return math.isfinite(out)
    return True


def classify(target: Target, arg: str, value, tmp_path) -> tuple[str, str]:
    """(outcome class, what happened) of ``target`` called with ``arg`` replaced by ``value``."""
    kw = dict(target.valid)
    if "tmp" in kw:
        kw["tmp"] = tmp_path
    reference = target.call(**kw)
    kw[arg] = value
    valid, finite = target.checks[arg](value)
    t0 = time.perf_counter()
    try:
        out = target.call(**kw)
    except (ValueError, TypeError) as e:
        if time.perf_counter() - t0 > 10:
            return "hang", f"{type(e).__name__} after {time.perf_counter() - t0:.0f} s"
        names = (arg, *target.aliases.get(arg, ()))
        message = str(e)
        if valid and finite and not any(n in message for n in names[1:]):  # a valid value another no longer fits
            return "unclear", f"a valid value refused: {type(e).__name__}: {message}"
        if not any(n in message for n in names) or "\n" in message.strip():
            return "unclear", f"{type(e).__name__} not naming {arg}: {message}"
        return "clear", message
    except Exception as e:  # noqa: BLE001  (the class under test)
        return "unclear", f"{type(e).__name__}: {e}"
    if time.perf_counter() - t0 > 10:
        return "hang", f"returned after {time.perf_counter() - t0:.0f} s"
    if not valid:
        return "silent", f"an invalid {arg} accepted, returning {_structure(out)}"
    same = target.same(out, reference) if target.same else _structure(out) == _structure(reference)
    if not same and not (target.name == "save/load" and isinstance(value, dict)
                                                         and len({t.ndim for t in out.values()}) > 1
                                                         and _params_ok(value, stacked=True)[0]
                                                         and not _params_ok(value)[0]):  # fmt: skip
        return "silent", f"the result's structure {_structure(out)} is not the reference's {_structure(reference)}"
    if finite and not _finite(out):
        return "silent", "a non-finite result from finite input"
    if not finite and not target.pure and arg not in target.overflow:
        return "silent", f"non-finite {arg} accepted by a host-side function"
    return "correct", ""


def _value_for(draw, target: Target, arg: str):
    if arg == "params":
        return draw(_params_variants(MODEL))
    if arg == "model":
        return draw(st.one_of(st.just(OTHER), st.just(MODEL), SCALARS))
    value = draw(HOSTILE)
    # a per-model lr is an (m,) tensor that only the update can check against the params: out of scope here
    assume(not (arg == "learning_rate" and isinstance(value, torch.Tensor) and value.ndim))
    # a valid but large sample count is a long computation, not a hang: the in-process run keeps them small
    assume(not (target.name in ("log_likelihood", "anomaly_score") and arg == "k" and _is_int(value, 5000)))
    return value


def _run(group: str, data, tmp_path) -> None:
    target = data.draw(st.sampled_from(GROUPS[group]), label="target")
    arg = data.draw(st.sampled_from(sorted(target.checks)), label="argument")
    value = _value_for(data.draw, target, arg)
    outcome, what = classify(target, arg, value, tmp_path)
    COUNTS[group][outcome] += 1
    if SURVEY and outcome not in ("correct", "clear"):
        print(f"SURVEY {group} {target.name}({arg}={_short(value)}): {outcome}: {what[:300]}")
        return
    assert outcome in ("correct", "clear"), f"{target.name}({arg}={_short(value)}): {outcome}: {what}"


def _short(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor({value.dtype}, {tuple(value.shape)})"
    if isinstance(value, np.ndarray):
        return f"ndarray({value.dtype}, {value.shape})"
    if isinstance(value, dict):  # what differs from MODEL's params
        odd = [f"{k}: {_short(v)}" for k, v in value.items() if k not in P or not isinstance(v, torch.Tensor)
               or v.dtype != P[k].dtype or v.shape != P[k].shape or not bool(torch.isfinite(v).all())]  # fmt: skip
        missing = sorted(set(P) - set(value))
        return "{" + ", ".join(odd + [f"missing {missing}"] * bool(missing)) + "}"
    return repr(value)[:80]


@pytest.mark.parametrize("group", sorted(GROUPS))
@CI
@given(data=st.data())
def test_hostile_arguments_ci(group, data, tmp_path_factory):
    _run(group, data, tmp_path_factory.mktemp("gen"))


@pytest.mark.adversarial
@pytest.mark.parametrize("group", sorted(GROUPS))
@ADVERSARIAL
@given(data=st.data())
def test_hostile_arguments_long(group, data, tmp_path_factory):
    _run(group, data, tmp_path_factory.mktemp("gen"))


# ------------------------------------------------------------------ hangs and memory, in a subprocess

LIMIT_BYTES = 4 * 2**30  # the address space a bomb may take: torch alone maps about 1-2 GiB


def _limits():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def _bomb(script: str, tmp_path, timeout: float = 60.0) -> tuple[int, str, float]:
    """Run ``script`` in a fresh Python under a memory limit; (exit code, stderr, seconds after import)."""
    root = str(Path(vaefunc.__file__).parents[1])
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
                        "OMP_NUM_THREADS": "1"}  # fmt: skip
    code = textwrap.dedent("""
        import sys, time, vaefunc
        from vaefunc import cli
        t0 = time.perf_counter()
        try:
            code = BODY
        finally:
            print(f"SECONDS {time.perf_counter() - t0:.3f}", file=sys.stderr)
        sys.exit(code)
    """).replace("BODY", script)
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=timeout, preexec_fn=_limits)  # fmt: skip
    seconds = [float(line.split()[1]) for line in p.stderr.splitlines() if line.startswith("SECONDS ")]
    return p.returncode, p.stderr, seconds[-1] if seconds else math.inf


def _pickle_bomb(tmp_path):
    import gzip
    import pickle

    node: list = []
    for _ in range(135):
        node = [node, node]
    (tmp_path / "mnist.pkl.gz").write_bytes(gzip.compress(pickle.dumps(node, protocol=2)))
    return "cli.main(['train', '--data', 'mnist.pkl.gz', '--out', 'r', '--progress', 'never'])", "must nest at most"


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "c.json")
    return "cli.main(['train', '--config', 'c.json', '--out', 'r'])", "must be a regular file"


def _layers(tmp_path):
    (tmp_path / "c.toml").write_text("[model]\nhidden = [" + ", ".join(["1"] * 3_000_000) + "]\n")
    return "cli.main(['train', '--config', 'c.toml', '--out', 'r'])", "must be at most 1048576 bytes"


def _layers_json(tmp_path):
    (tmp_path / "c.json").write_text('{"model": {"hidden": [' + ",".join(["1"] * 300_000) + "]}}")
    return "cli.main(['train', '--config', 'c.json', '--out', 'r'])", "hidden must have at most 1024 entries"


def _huge_epochs(tmp_path):
    return "cli.main(['train', '--epochs', '99999999999999999999', '--out', 'r'])", "epochs must be an int >= 0"


def _stages(tmp_path):
    return ("cli.main(['train', '--lr-schedule', 'iwae-paper:99999999999', '--out', 'r'])",
            "STAGES must be at most 40")  # fmt: skip


def _dev_zero(tmp_path):
    return "cli.main(['train', '--config', '/dev/zero', '--out', 'r'])", "must be a regular file"


def _zeros_config(tmp_path):
    (tmp_path / "c.json").write_bytes(b"\0" * 50_000_000)
    return "cli.main(['train', '--config', 'c.json', '--out', 'r'])", "must be at most 1048576 bytes"


def _idx_header(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + b"\xff" * 12 + b"\0" * 16)
    return "cli.main(['train', '--data', 'train-images-idx3-ubyte', '--out', 'r'])", "corrupt IDX header"


def _huge_model(tmp_path):
    return ("cli.main(['train', '--hidden', '2000000000', '--latent-dim', '2000000000', '--out', 'r'])",
            "the params would take")  # fmt: skip


def _stages_api(tmp_path):
    return ("(vaefunc.iwae_paper_lr(10, stages=2**40), 0)[1]", "stages must be a positive int of at most 40")


def _sample_many(tmp_path):
    return ("(vaefunc.VAE((4,), latent_dim=2, hidden=(4,)).sample(vaefunc.VAE((4,), latent_dim=2, hidden=(4,))"
            ".init(), 10**15), 0)[1]", "n must be a positive int")  # fmt: skip


BOMBS = {"pickle of shared nested lists": _pickle_bomb, "--config a FIFO": _fifo, "--config /dev/zero": _dev_zero,
         "--config of 3 million layers (TOML)": _layers, "--config of 300,000 layers (JSON)": _layers_json,
         "--config of 50 MB of zero bytes": _zeros_config, "--epochs 1e20": _huge_epochs,
         "--lr-schedule iwae-paper:99999999999": _stages, "iwae_paper_lr(stages=2**40)": _stages_api,
         "an IDX header of 2**96 values": _idx_header, "a model of 4e18 params": _huge_model,
         "sample(n=10**15)": _sample_many}  # fmt: skip
CHEAP = ("--config a FIFO", "--epochs 1e20")


def _check_bomb(name, tmp_path):
    script, message = BOMBS[name](tmp_path)
    code, err, seconds = _bomb(script, tmp_path)
    outcome = "clear" if code not in (0, None) and message in err and seconds < 5 else "unclear"
    COUNTS["subprocess"][outcome] += 1
    assert code not in (0, None) and code > 0, (code, err[-2000:])
    assert message in err, err[-2000:]
    assert seconds < 5, f"{name}: {seconds:.1f} s"


@pytest.mark.parametrize("name", CHEAP)
def test_bombs_cheap(name, tmp_path):
    _check_bomb(name, tmp_path)


@pytest.mark.adversarial
@pytest.mark.parametrize("name", sorted(set(BOMBS) - set(CHEAP)))
def test_bombs(name, tmp_path):
    _check_bomb(name, tmp_path)


def test_a_full_disk_is_named_by_the_atomic_writer(tmp_path, monkeypatch):
    from vaefunc import _io

    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io, "_write", full)
    with pytest.raises(OSError, match="No space left on device") as info:
        vaefunc.save(tmp_path / "c.safetensors", P, model=MODEL)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "c.safetensors")
    assert not list(tmp_path.iterdir())
