"""How a training step runs: one small interface, and the one place that picks an implementation.

The loop (:mod:`vaefunc.loop`) owns no tensors of its own and never asks how a
step runs; it talks to a :class:`Runner`:

- ``advance(batch) -> metrics``: one step, written into the runner's own
  params and optimizer state (buffer donation, as JAX's ``donate_argnums``);
- ``state() -> (params, opt_state)``: a snapshot, safe to keep;
- ``load(params, opt_state)``: overwrite the buffers (to replay from a snapshot).

:func:`build` makes one from a :class:`Plan`; the combinations it covers:

============================  ===============================================================
eager                         gradient by ``torch.autograd.grad`` (one model) or ``vmap`` (an
                              ensemble), then the optimizer's in-place step (the fused Adam)
compiled                      ``torch.compile(donated(step), fullgraph=True)``: the pure step
                              and the copy into the buffers in one graph
compiled on CUDA              the compiled step replayed as one CUDA graph (:class:`GraphedStep`)
data-parallel (torchrun)      the gradient sharded and all-reduced (:mod:`vaefunc.distributed`),
                              the pure step donated, eager or compiled
============================  ===============================================================

Axis letters: m ensemble members, b batch, d data features, k importance samples, z latent.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from . import step as steps
from ._trees import copy_into
from ._types import Metrics, OptState, Params
from .accel import GraphedStep, autocast_loss, compile_graph, resolve_autocast
from .donate import donated, owned
from .losses import loss_of_form
from .optim import Optimizer, in_place

# compile="auto": compile when the run's estimated eager time exceeds this many
# seconds (float32 compiled step), or the _BF16 one where the compiled step runs
# bf16 matmuls (autocast="auto" on a CPU with fast bf16 matmuls), which repays the compile sooner.
# Measured on the 2-core CPU (python -m benchmarks, 784-400-20, batch 128): a
# cold compile costs 13.7 s more than an eager first step; the bf16 compiled
# epoch runs 1.75x the eager one and repays it after about 1.0 million examples
# (32 s of eager training, 41 s as estimated below); the float32 compiled epoch
# runs 1.27x to 1.55x and repays it after 1.2 to 2.0 million (50 to 82 s as
# estimated). See README, "When does train compile?".
AUTO_COMPILE_MIN_SECONDS = 60.0
AUTO_COMPILE_MIN_SECONDS_BF16 = 40.0
# Eager throughput (FLOP/s) and per-step overhead (s) used only for that
# estimate; deterministic, so the same call always makes the same choice. The
# 784-400-20 step at batch 128 (0.5 GFLOP) is estimated at 5.2 ms against 3.9 ms
# measured on the 2-core CPU, so the 60 s threshold falls near the measured crossover.
_EAGER_RATE = {"cpu": 1e11, "cuda": 5e12}
_EAGER_OVERHEAD = {"cpu": 2e-4, "cuda": 1e-3}


class Batch(NamedTuple):
    """What one step reads: x (b, d), eps (b, z) or (k, b, z), the KL term's beta and capacity
    (0-d), and a conditional model's one-hot labels y (b, n); an ensemble adds a leading (m,)
    to beta and capacity, and to x, eps and y when its members draw their own batches."""

    x: Tensor
    eps: Tensor
    beta: Tensor
    capacity: Tensor
    y: Tensor | None = None


class Runner(Protocol):
    def advance(self, batch: Batch) -> Metrics: ...

    def state(self) -> tuple[Params, OptState]: ...

    def load(self, params: Params, opt_state: OptState) -> None: ...


class Plan(NamedTuple):
    """Everything that decides how a step runs; hashable, so compiled steps are cached by it."""

    model: Any  # the vaefunc.VAE spec
    objective: str  # "elbo" or "iwae"
    kl_form: str  # the KL term's static form: "beta", "capacity" or "free_bits" (its values enter as tensors)
    free_bits: float  # lambda of the free-bits form
    optimizer: Optimizer
    compiled: bool
    device_type: str  # "cpu" or "cuda"
    autocast: str | None = None  # None (float32) or "bf16": resolved from TrainConfig.autocast
    members: int | None = None  # m for an ensemble
    shared_data: bool = True  # an ensemble's members see the same batch
    cuda_graph: bool = False  # replay the compiled step as one CUDA graph
    alpha: float = 0.0  # a semi-supervised model's classification weight
    gradient: str = "reparam"  # the gradient estimator (vaefunc.gradients)
    threads: int | None = None  # intra-op threads the step runs on: a compiled CPU step's kernels are built for them


class InPlace:
    """A runner over an ``advance(params, opt_state, *batch, y=...)`` that overwrites the buffers it is given."""

    def __init__(self, advance, params: Params, opt_state: OptState):
        self._advance = advance
        self.params, self.opt_state = owned((params, opt_state))  # the caller's tensors are never written

    def advance(self, batch: Batch) -> Metrics:
        if batch.y is None:  # no keyword at all: a compiled step guards on the keywords it was called with
            return self._advance(self.params, self.opt_state, *batch[:4])
        return self._advance(self.params, self.opt_state, *batch[:4], y=batch.y)

    def state(self) -> tuple[Params, OptState]:
        return owned((self.params, self.opt_state))

    def load(self, params: Params, opt_state: OptState) -> None:
        copy_into((self.params, self.opt_state), (params, opt_state),
                  mismatch="the state to load must have the structure of the runner's")


class Graphed:
    """A runner that replays the compiled step as a CUDA graph over static buffers (:class:`GraphedStep`)."""

    def __init__(self, step, params: Params, opt_state: OptState, template: Batch, *, capture: bool):
        self.graph = GraphedStep(_positional(step), params, opt_state, *_inputs(template), capture=capture)

    def advance(self, batch: Batch) -> Metrics:
        return self.graph(*_inputs(batch))

    def state(self) -> tuple[Params, OptState]:
        return self.graph.state()

    def load(self, params: Params, opt_state: OptState) -> None:
        self.graph.load(params, opt_state)


def build(plan: Plan, params: Params, opt_state: OptState, template: Batch, *, parallel=None) -> Runner:
    """The runner for ``plan``, owning copies of ``params`` and ``opt_state``.

    Args:
        template: a batch of the right shapes (a CUDA graph is captured on it).
        parallel: a :class:`vaefunc.distributed.Context` for data-parallel training.
    """
    if parallel is not None:
        from . import distributed as dp  # noqa: PLC0415  (torch.distributed only when asked for)

        grads = dp.sharded(_gradient(plan), parallel, batch_size=template.x.shape[-2])
        params, opt_state = dp.broadcast_state((params, opt_state))
        step = steps.updating(grads, plan.optimizer)
        advance = compile_graph(donated(step)) if plan.compiled else donated(step)
        return InPlace(dp.guard(advance, parallel), params, opt_state)
    if plan.cuda_graph:
        return Graphed(_pure_step(plan), params, opt_state, template, capture=plan.device_type == "cuda")
    return InPlace(_advance(plan), params, opt_state)


def should_compile(compile: bool | str, device: torch.device, macs_per_example: int, samples_per_step: int,
                   total_steps: int, *, autocast: str | None, dtype: torch.dtype) -> bool:  # fmt: skip
    """The ``compile="auto"`` rule: on CUDA always; on CPU when the run's eager time, estimated
    from its FLOPs, would exceed AUTO_COMPILE_MIN_SECONDS, or AUTO_COMPILE_MIN_SECONDS_BF16 when
    the compiled step would run bf16 matmuls (``autocast`` resolved for ``dtype`` data; deterministic)."""
    if compile != "auto":
        return bool(compile)
    bf16 = resolve_autocast(autocast, device, dtype, compiled=True) == "bf16"
    return auto_compiles(device, macs_per_example, samples_per_step, total_steps, bf16=bf16)


def auto_compiles(device: torch.device, macs_per_example: int, samples_per_step: int, total_steps: int, *,
                  bf16: bool) -> bool:  # fmt: skip
    """:func:`should_compile`'s ``"auto"`` rule, with the compiled step's precision resolved
    (``bf16``: it would run bf16 matmuls)."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    if kind == "cuda":
        return True
    flops_per_step = 6 * samples_per_step * macs_per_example  # forward and backward
    threshold = AUTO_COMPILE_MIN_SECONDS_BF16 if bf16 else AUTO_COMPILE_MIN_SECONDS
    return total_steps * (flops_per_step / _EAGER_RATE[kind] + _EAGER_OVERHEAD[kind]) > threshold


def use_cuda_graph(device: torch.device, compiled: bool, *, binarize: str | None, labelled: bool,
                   members: int | None) -> bool:  # fmt: skip
    """Replay the step as a CUDA graph: a compiled single-model run on CUDA whose inputs are
    plain (no labels, no on-the-fly binarization); other runs use the compiled step directly."""
    return compiled and device.type == "cuda" and binarize != "dynamic" and not labelled and members is None


def _loss(plan: Plan):
    loss = loss_of_form(plan.model, plan.objective, plan.kl_form, plan.free_bits, plan.alpha, plan.gradient)
    return autocast_loss(loss, plan.device_type, plan.autocast)


def _gradient(plan: Plan):
    """The pure gradient of a plan's loss: one model's, or vmapped over an ensemble's members."""
    if plan.members is None:
        return steps.gradient(_loss(plan), eager=False)
    return steps.ensemble_gradient(_loss(plan), shared_data=plan.shared_data)


@functools.lru_cache(maxsize=32)
def _pure_step(plan: Plan):
    """The pure step of a plan, compiled if it says so (cached: a later run with the same plan reuses it)."""
    step = steps.updating(_gradient(plan), plan.optimizer)
    return compile_graph(step) if plan.compiled else step


@functools.lru_cache(maxsize=32)
def _advance(plan: Plan):
    """``advance(params, opt_state, *batch, y=None) -> metrics`` of a plan, overwriting params and state.

    Compiled: the pure step and the copy into the buffers are one graph, so the
    compiler's fused optimizer kernel stores straight into them. Eager: the
    gradient, then the optimizer's in-place step (for the fused Adam, one
    kernel over every param). Cached by the plan: a second run with the same
    plan does not compile again (the plan holds the spec, so a ReLU and a tanh
    model never share a step).
    """
    if plan.compiled:
        step = _pure_step(plan._replace(compiled=False))
        return compile_graph(donated(step))
    loss = _loss(plan)
    if plan.members is None:
        grads_fn = steps.gradient(loss, eager=True)
    else:
        grads_fn = steps.ensemble_gradient(loss, shared_data=plan.shared_data)
    apply = in_place(plan.optimizer)

    def advance(params: Params, opt_state: OptState, *batch: Tensor, y: Tensor | None = None) -> Metrics:
        grads, (loss_value, metrics) = grads_fn(params, *batch, y=y)
        apply(params, grads, opt_state)
        return {"loss": loss_value, **metrics}

    return advance


def _inputs(batch: Batch) -> tuple[Tensor, ...]:
    return tuple(batch[:4]) if batch.y is None else (*batch[:4], batch.y)


def _positional(step):
    """``step(params, opt_state, x, eps, beta, capacity[, y])`` with the labels positional (a graph's inputs)."""

    def positional(params: Params, opt_state: OptState, x, eps, beta, capacity, y=None):
        return step(params, opt_state, x, eps, beta, capacity, y=y)

    return positional

