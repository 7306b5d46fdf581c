"""Running the pure step at the hardware's limit: CUDA graphs, TF32 and bf16 autocast.

Nothing here changes what a step computes. :class:`GraphedStep` replays the
(compiled) pure step as one CUDA graph whose inputs and outputs live in static
buffers; :func:`autocast_loss` runs a loss's forward under bf16 autocast;
:func:`matmul_precision` allows TF32 matmuls for the duration of a run.

Why a hand-captured graph rather than ``torch.compile(mode="reduce-overhead")``
(CUDAGraph Trees): there the step's outputs live in the graph's memory pool and
are overwritten by the next replay, so every state the loop keeps (the last
finite state for the non-finite replay, a resumable state, the result) would
need a clone anyway, and touching a stale one raises an error far from its
cause; a call with inputs that are not the previous replay's outputs (the
user's params on the first step, a snapshot replayed after a non-finite loss)
copies them in or records another graph. Here the ownership is explicit: the
graph reads params and optimizer state from our buffers and writes the new
values back in place, a step is one ``replay()`` plus the copies of x and eps,
the loop snapshots the buffers only at its sync points, and the compiled step
itself stays a plain function that can be called on any params.

Axis letters: b batch, d data features, z latent.
"""

from __future__ import annotations

import contextlib
import functools
import math
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from . import threads
from ._trees import copy_into
from ._types import Metrics, OptState, Params
from .donate import donated, owned

AUTOCAST = (None, "bf16", "auto")
COMPILE = (True, False, "auto")
"""The values ``compile=`` takes, in ``train`` and ``log_likelihood``."""
# autocast="auto": bf16 matmuls for a compiled float32 step on a CPU with AMX-BF16 tiles, or with
# AVX512_BF16 where a timed GEMM shows bf16 faster (bf16_matmul_units). With AMX,
# measured on the 2-core CPU (784-400-20, batch 128, docs/BENCHMARKS.md): a bf16 matmul of the
# step's shapes runs 3-4x a float32 one, the compiled epoch 1.26x, and the test -ELBO after
# 10 epochs moved by at most 0.06 nats (embedded digits and full MNIST, two seeds each). Eager
# steps stay float32 (bf16 gained 7%), as do CUDA runs (TF32 is their switch: ``tf32=True``).


class GraphedStep:
    """A pure step that advances params and optimizer state held in static buffers.

    ``graphed(x, eps, *hparams) -> metrics`` copies its inputs into static
    input buffers and runs ``step`` on the buffers; the new params and state are
    copied back into them in place. With ``capture=True`` (CUDA) the whole thing
    is captured once as a ``torch.cuda.CUDAGraph`` and each call is a replay;
    with ``capture=False`` it runs eagerly, on any device (which is how it is
    tested on a CPU).

    The returned ``metrics`` are static outputs too: read them (or add them to
    something) before the next call. :meth:`state` returns copies of the params
    and optimizer state, safe to keep. The ``params`` and ``opt_state`` given
    to the constructor are never modified.

    Args:
        step: ``step(params, opt_state, x, eps, *hparams) -> (params, opt_state, metrics)``,
            pure, with no host synchronisation (compiled or not).
        params, opt_state: the starting point; copied into the buffers.
        x: (b, d), eps: (b, z), hparams: 0-d tensors: examples of the inputs,
            whose shapes, dtypes and devices every call must match.
        capture: capture a CUDA graph (requires CUDA tensors).
        warmup: eager calls before the capture (compilation, autotuning and
            cuBLAS workspaces happen there, on a side stream, as capture needs).

    Example:
        >>> graphed = GraphedStep(torch.compile(step, fullgraph=True), params, opt_state, x, eps, beta,
        ...                       capture=True)
        >>> for x, eps in batches:
        ...     sums += torch.stack(list(graphed(x, eps, beta).values()))
        >>> params, opt_state = graphed.state()
    """

    def __init__(
        self,
        step: Callable[..., tuple[Params, OptState, Metrics]],
        params: Params,
        opt_state: OptState,
        x: Tensor,
        eps: Tensor,
        *hparams: Tensor,
        capture: bool = True,
        warmup: int = 3,
    ):
        self._advance_fn = donated(step)
        leaves, self._spec = tree_flatten((params, opt_state))
        self._start = leaves
        self._buffers = [t.detach().clone() for t in leaves]
        self.inputs = [t.detach().clone() for t in (x, eps, *hparams)]
        self.metrics: Metrics = {}
        self.graph = None
        if not capture:
            return
        if self.inputs[0].device.type != "cuda":
            raise ValueError(f"capture=True needs CUDA tensors; got inputs on {self.inputs[0].device}")
        side = torch.cuda.Stream(device=self.inputs[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._advance()
        torch.cuda.current_stream().wait_stream(side)
        self._reset()  # the warm-up steps must not count
        self.graph = torch.cuda.CUDAGraph()
        # Capture on the warm-up stream: handles (cuBLAS workspaces) created there are reused.
        with torch.cuda.graph(self.graph, stream=side):
            self._advance()

    def _advance(self) -> None:
        params, opt_state = tree_unflatten(self._buffers, self._spec)  # the buffers themselves
        self.metrics = self._advance_fn(params, opt_state, *self.inputs)  # writes the new values into them

    def _reset(self) -> None:
        torch._foreach_copy_(self._buffers, self._start)

    def __call__(self, x: Tensor, eps: Tensor, *hparams: Tensor) -> Metrics:
        for dst, src in zip(self.inputs, (x, eps, *hparams)):
            if src is not dst:
                dst.copy_(src)
        if self.graph is None:
            self._advance()
        else:
            self.graph.replay()
        return self.metrics

    def state(self) -> tuple[Params, OptState]:
        """Copies of the current params and optimizer state (the buffers change at the next call)."""
        return owned(tree_unflatten(self._buffers, self._spec))

    def load(self, params: Params, opt_state: OptState) -> None:
        """Overwrite the buffers with ``params`` and ``opt_state`` (of the structure the graph was built on)."""
        copy_into(tree_unflatten(self._buffers, self._spec), (params, opt_state),
                  mismatch="the state to load must have the structure the graph was built on")


def compile_graph(fn: Callable) -> Callable:
    """``torch.compile(fn, fullgraph=True, dynamic=False)`` with :func:`inductor_options`: how vaefunc compiles.

    One graph (a graph break is an error), static shapes (a new shape is a new
    graph, never a dynamic one).
    """
    return torch.compile(fn, fullgraph=True, dynamic=False, options=inductor_options())


def inductor_options() -> dict[str, Any]:
    """Inductor settings for vaefunc's compiled functions, applied only while they compile.

    ``cpp.vec_isa_ok``: Inductor dry-compiles and loads a small C++ program for
    each vector ISA of the CPU (AVX2, AVX-512, VNNI, AMX) before it generates
    kernels, to learn whether libtorch carries the vectorized math those kernels
    call. Where torch's own kernels already run at AVX2 or AVX-512 here, it does;
    skipping the four builds that include ATen's vector headers took a fresh
    process to its first compiled step in 15 s instead of 22 s on the 2-core CPU
    (README, "The cold compile"). The instruction-set probes that follow (bf16,
    VNNI, AMX) still run.

    ``cpp.simdlen`` (x86): the vector width of the ISA torch's own kernels run,
    which is the one Inductor picks anyway (``ATEN_CPU_CAPABILITY`` chooses it for
    both). Said explicitly, it enters the key of Inductor's on-disk FX graph
    cache, which in torch 2.13 leaves the ISA out: a graph compiled under
    ``ATEN_CPU_CAPABILITY=avx2`` was served to a process running AVX-512 (and
    the reverse), which then computed wrong numbers and corrupted its heap.

    Settings the user made (``TORCHINDUCTOR_VEC_ISA_OK``, ``cpp.simdlen``) are kept.
    """
    from torch._inductor import config  # noqa: PLC0415  (Inductor only when something compiles)

    capability = torch.backends.cpu.get_cpu_capability()
    options: dict[str, Any] = {}
    if capability in ("AVX2", "AVX512") and config.cpp.vec_isa_ok is None:
        options["cpp.vec_isa_ok"] = True
    if platform.machine() in ("x86_64", "AMD64") and capability in SIMDLEN and config.cpp.simdlen is None:
        options["cpp.simdlen"] = SIMDLEN[capability]
    return options


SIMDLEN = {"AVX512": 512, "AVX2": 256, "DEFAULT": 1}
"""Inductor's ``cpp.simdlen`` for torch's CPU capability on x86: the vector ISA's width in bits; 1 matches no
ISA, so no vectorization, as Inductor does under ``ATEN_CPU_CAPABILITY=default``."""


BF16_PREFER = 1.3
"""Without AMX, bf16 matmuls must run this many times float32's rate (:func:`bf16_gemm_speedup`) to be used."""


def bf16_matmul_units(device: torch.device) -> bool:
    """Whether ``device`` is a CPU whose bf16 matmuls outrun its float32 ones: AMX-BF16 tiles (Sapphire
    Rapids and later Xeons), or AVX512_BF16 without AMX (AMD Zen 4 and later, Cooper Lake Xeons) where
    :func:`bf16_gemm_speedup` measured :data:`BF16_PREFER` times float32's rate (timed once per process:
    33 ms on the 2-core Intel Xeon, where bf16 ran 3.6x float32 with AMX; AVX512_BF16 alone speeds
    some GEMMs up and slows others)."""
    if device.type != "cpu":
        return False
    caps = torch.cpu.get_capabilities()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: absent means no
    if amx is not None and amx() and caps.get("amx_bf16", False):
        return True
    return bool(caps.get("avx512_bf16", False)) and _bf16_gemm_faster()


@functools.cache
def _bf16_gemm_faster() -> bool:
    """:func:`bf16_gemm_speedup` reached :data:`BF16_PREFER`: timed once per process."""
    return bf16_gemm_speedup() >= BF16_PREFER


def bf16_gemm_speedup(m: int = 128, k: int = 784, n: int = 400, *, repeats: int = 5,
                      timer: Callable[[], float] = time.perf_counter) -> float:  # fmt: skip
    """float32's time over bf16's for an (m, k) x (k, n) CPU matmul on one thread, the default
    784-400-20 step's largest shape at batch 128: the best of ``repeats`` timings of 8 calls each,
    alternating, after a warm-up of each (one thread: the rate per core, whatever the run's count)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    best = dict.fromkeys(pairs, math.inf)
    with threads.using(1):
        for i in range(repeats + 1):
            for dtype, (x, y) in pairs.items():
                t0 = timer()
                for _ in range(8):
                    torch.mm(x, y)
                seconds = timer() - t0
                if i:  # the first round warms up
                    best[dtype] = min(best[dtype], seconds)
    return best[torch.float32] / best[torch.bfloat16]


def resolve_autocast(autocast: str | None, device: torch.device, dtype: torch.dtype, *, compiled: bool) -> str | None:
    """The precision a run's forward takes: ``"bf16"`` or None (float32).

    ``"auto"`` is ``"bf16"`` for a compiled float32 step on a CPU whose bf16
    matmuls outrun float32 ones (:func:`bf16_matmul_units`), None otherwise; None and
    ``"bf16"`` are taken as given.
    """
    if autocast != "auto":
        return autocast
    return "bf16" if compiled and dtype == torch.float32 and bf16_matmul_units(device) else None


def autocast_loss(loss_fn: Callable, device_type: str, autocast: str | None) -> Callable:
    """``loss_fn`` with its forward run under ``torch.autocast`` (bf16), or unchanged for None.

    The matmuls run in bf16; :func:`vaefunc.losses.elbo_parts` casts the decoder
    output and the posterior's (mu, logvar) back to the data's dtype, so the
    log-likelihood, the KL and the batch mean are accumulated in float32.

    Example:
        >>> loss_fn = autocast_loss(make_elbo_loss(), "cuda", "bf16")
        >>> step = make_step(loss_fn, adam(1e-3))
    """
    if autocast not in (None, "bf16"):
        raise ValueError(f"autocast must be None or 'bf16' (resolve 'auto' first); got {autocast!r}")
    if autocast is None:
        return loss_fn

    def loss(params: Params, x: Tensor, eps: Tensor, *hparams: Tensor, **inputs: Tensor):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return loss_fn(params, x, eps, *hparams, **inputs)

    return loss


@contextlib.contextmanager
def matmul_precision(tf32: bool, device: torch.device) -> Iterator[None]:
    """Allow TF32 float32 matmuls inside the block when ``tf32`` and on CUDA; restore after.

    On a CPU this does nothing (float32 stays float32).

    Example:
        >>> with matmul_precision(True, torch.device("cuda")):
        ...     params, opt_state, metrics = step(params, opt_state, x, eps, beta)
    """
    if not (tf32 and device.type == "cuda"):
        yield
        return
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)
