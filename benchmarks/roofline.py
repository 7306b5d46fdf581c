"""The roofline: what the hardware could do for one training step, measured in the same run.

A step of the MLP VAE is a chain of GEMMs (the forward and backward of each
linear layer) plus elementwise work (activations, the loss, Adam). Its floor is
the larger of

* its GEMM FLOPs over the rate this machine reaches on *those* GEMMs (the step's
  own shapes, timed back to back, float32 unless told otherwise), and
* its minimum memory traffic over the measured copy bandwidth.

``share = floor / measured step time``: 1.0 means the step runs at the
hardware's limit for its shapes.

Axis letters: b batch, d data features, h hidden, z latent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

Layer = tuple[int, int]
"""A linear layer as (in, out)."""


def mlp_layers(d: int, hidden: Sequence[int], latent: int) -> list[Layer]:
    """The linear layers of the VAE, encoder then decoder, as (in, out)."""
    enc = [d, *hidden, 2 * latent]
    dec = [latent, *hidden[::-1], d]
    return list(zip(enc[:-1], enc[1:])) + list(zip(dec[:-1], dec[1:]))


def step_gemms(batch: int, layers: Sequence[Layer]) -> list[tuple[int, int, int]]:
    """The (m, k, n) of every GEMM in one training step.

    Per layer: the forward x @ W^T (b, in) x (in, out), the weight gradient
    g^T @ x (out, b) x (b, in), and the input gradient g @ W (b, out) x (out, in),
    except for the first layer, whose input (the data) needs no gradient.
    """
    gemms = []
    for i, (d_in, d_out) in enumerate(layers):
        gemms.append((batch, d_in, d_out))
        gemms.append((d_out, batch, d_in))
        if i > 0:
            gemms.append((batch, d_out, d_in))
    return gemms


def step_flops(batch: int, layers: Sequence[Layer]) -> int:
    """GEMM FLOPs of one training step (2 m k n each); elementwise work is not counted."""
    return sum(2 * m * k * n for m, k, n in step_gemms(batch, layers))


def step_bytes(batch: int, layers: Sequence[Layer], *, itemsize: int = 4) -> int:
    """A lower bound on one step's memory traffic, in bytes.

    Parameters: read by the forward and the input gradient, the gradient
    written, and Adam reading p, g, m, v and writing p, m, v: 10 passes.
    Activations: each layer's input read twice (forward, weight gradient) and
    its output and output gradient written once and read once.
    """
    n_params = sum(i * o + o for i, o in layers)
    act = sum(2 * i + 4 * o for i, o in layers)
    return itemsize * (10 * n_params + batch * act)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, *, device: torch.device, min_seconds: float, rounds: int = 5) -> float:
    """The fastest of a few rounds of ``fn``, each repeated to last ``min_seconds`` / rounds."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(min_seconds / rounds / once))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def gemm_rate(
    batch: int,
    layers: Sequence[Layer],
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    min_seconds: float = 0.5,
) -> dict[str, float]:
    """Time the step's own GEMMs back to back; return their FLOPs, seconds and FLOP/s.

    The operands are allocated once, as a step's would be by the allocator's
    cache; the outputs go to preallocated buffers, so only the GEMMs are timed.
    """
    gen = torch.Generator(device=device).manual_seed(0)
    ops = []
    for m, k, n in step_gemms(batch, layers):
        a = torch.randn(m, k, generator=gen, device=device, dtype=dtype)
        b = torch.randn(k, n, generator=gen, device=device, dtype=dtype)
        ops.append((a, b, torch.empty(m, n, device=device, dtype=dtype)))

    def run():
        for a, b, out in ops:
            torch.mm(a, b, out=out)

    seconds = _best_time(run, device=device, min_seconds=min_seconds)
    flops = step_flops(batch, layers)
    return {"flops": flops, "seconds": seconds, "flops_per_s": flops / seconds}


def square_gemm_rate(size: int, *, device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of one large square GEMM: the machine's practical peak, for context."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty_like(a)
    seconds = _best_time(lambda: torch.mm(a, a, out=out), device=device, min_seconds=0.5)
    return 2 * size**3 / seconds


def copy_bandwidth(*, device: torch.device, mib: int = 64) -> float:
    """Bytes per second of a large device-to-device copy (read + write both counted)."""
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    seconds = _best_time(lambda: dst.copy_(src), device=device, min_seconds=0.5)
    return 2 * src.numel() * 4 / seconds


def floor_seconds(flops: float, nbytes: float, *, flops_per_s: float, bytes_per_s: float) -> tuple[float, str]:
    """The roofline floor of a step and what sets it: ``"matmul"`` or ``"memory"``."""
    compute, memory = flops / flops_per_s, nbytes / bytes_per_s
    return (compute, "matmul") if compute >= memory else (memory, "memory")
