"""Data-parallel training with torch.distributed, for torch.func gradients.

``DistributedDataParallel`` works through autograd hooks on ``nn.Module``
parameters, which never fire for ``torch.func.grad``; so this module does by
hand what DDP does: one set of params on every rank, each rank takes its slice
of every global batch, and the gradients are summed with ONE ``all_reduce`` of
one contiguous buffer per step, then every rank applies the same pure optimizer
update and so keeps the same params.

The contract (see the README, "Data-parallel training"):

* ``batch_size`` is the GLOBAL batch: rank r of w takes rows
  ``[r * b / w, (r + 1) * b / w)`` of every batch, so ``b`` must be divisible
  by ``w`` and the run equals single-process training with the same
  ``batch_size`` and seed, within float rounding (the sum over ranks adds in
  another order).
* Every rank holds the whole dataset and draws the same shuffle and the same
  eps from the same seeded generators, then uses its slice: example j of a
  global batch gets the same eps whichever rank computes it.
* The buffer carries the gradients and the step's metrics, so the reported
  loss is the global batch's, identical on every rank (and so is the decision
  to stop on a non-finite loss).
* The all_reduce is a functional collective
  (``torch.distributed._functional_collectives.all_reduce``), which
  ``torch.compile(fullgraph=True)`` traces: the whole step, gradient,
  all_reduce and update, is one graph.

Axis letters: b batch (global), d data features, z latent.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import Tensor

from ._types import Params
from .optim import Optimizer
from .step import LossFn, Step, updating

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TIMEOUT_S = 300.0
"""How long a collective waits for the other ranks before it fails (seconds);
``join(timeout=...)`` or the ``VAEFUNC_DIST_TIMEOUT`` environment variable
override it. Short enough that a dead rank stops the others with an error
rather than hanging them for torch's default 10 to 30 minutes."""


class DistributedError(RuntimeError):
    """A collective failed: another rank died, hung or timed out."""


class Context(NamedTuple):
    rank: int  # this process's rank, 0 .. world_size - 1
    world_size: int  # number of processes
    device: torch.device  # where this rank trains: cuda:LOCAL_RANK on CUDA


def join(device: torch.device | str | None = None, *, timeout: float | None = None) -> Context:
    """Join the process group that torchrun describes in the environment.

    If the default process group is not initialised yet, it is initialised
    from the environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``, as ``torchrun`` sets them) with NCCL on CUDA and gloo on
    CPU, and destroyed when the process exits; if it is, it is used as it is
    (and left to its owner).

    Args:
        device: the training device; a CUDA device without an index (``"cuda"``)
            becomes ``cuda:LOCAL_RANK`` (one GPU per process). ``train`` passes
            the params' device type when no ``device`` is given.
        timeout: seconds a collective waits before failing; default
            ``VAEFUNC_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`.

    Returns:
        :class:`Context` (rank, world_size, device).

    Example:
        >>> # in a script launched with: torchrun --nproc-per-node 2 script.py
        >>> ctx = vaefunc.distributed.join()
        >>> ctx.rank, ctx.world_size
        (0, 2)
    """
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"distributed=True needs a process group: launch with torchrun (e.g. `torchrun --nproc-per-node 2 "
                f"-m vaefunc train ...`) or call torch.distributed.init_process_group first; missing {missing}"
            )
        seconds = timeout if timeout is not None else float(os.environ.get("VAEFUNC_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds), **kwargs)
        atexit.register(_destroy)  # the group vaefunc made, vaefunc ends
    return Context(dist.get_rank(), dist.get_world_size(), device)


def _destroy() -> None:
    """Destroy the default process group at exit while the interpreter is whole: left to the
    interpreter's finalisation, gloo's worker threads can abort the process ("terminate called
    without an active exception", SIGABRT) after training has finished."""
    if dist.is_initialized():
        dist.destroy_process_group()


def make_data_parallel_step(
    loss_fn: LossFn, optimizer: Optimizer, *, rank: int, world_size: int, batch_size: int
) -> Step:
    """A training step that shards the global batch and all-reduces the gradients.

    ``step(params, opt_state, x, eps, *hparams, **inputs) -> (params, opt_state, metrics)``
    has :func:`vaefunc.make_step`'s signature and takes the GLOBAL batch
    x: (b, d), eps: (b, z) (or (k, b, z)); this rank differentiates ``loss_fn``
    (a mean over the batch) on its rows only (:func:`sharded`). Then
    ``optimizer`` updates, the same on every rank. ``torch.compile(step,
    fullgraph=True)`` gives one graph (the functional all_reduce traces).

    Example:
        >>> ctx = join()
        >>> step = make_data_parallel_step(model.loss(), adam(1e-3), rank=ctx.rank,
        ...                                world_size=ctx.world_size, batch_size=128)
        >>> params, opt_state, metrics = step(params, opt_state, x, eps, beta, capacity)
    """
    ctx = Context(rank, world_size, torch.device("cpu"))
    grads = sharded(torch.func.grad_and_value(loss_fn, has_aux=True), ctx, batch_size=batch_size)
    return updating(grads, optimizer)


def sharded(grads_fn, ctx: Context, *, batch_size: int):
    """``grads_fn`` on this rank's rows of the global batch, averaged over ranks with ONE all_reduce.

    ``grads(params, x, eps, *hparams, **inputs) -> (grads, (loss, metrics))``:
    rank r of w takes rows ``[r*b/w, (r+1)*b/w)`` of the batch axis of x
    (axis -2), eps (axis -2: (b, z) or (k, b, z)) and every input (the labels
    y); the gradients and the metrics are packed into one flat buffer, summed
    over ranks and divided by w, the mean over the global batch.
    """
    if batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size (the global batch) must be divisible by the number of processes ({ctx.world_size}); "
            f"got {batch_size}"
        )
    shard = batch_size // ctx.world_size
    lo, hi = ctx.rank * shard, (ctx.rank + 1) * shard
    group = dist.group.WORLD

    def grads(params: Params, x: Tensor, eps: Tensor, *hparams: Tensor, **inputs: Tensor):
        inputs = {name: v[..., lo:hi, :] for name, v in inputs.items() if v is not None}
        g, (loss, metrics) = grads_fn(params, x[..., lo:hi, :], eps[..., lo:hi, :], *hparams, **inputs)
        g, metrics = all_reduce_mean(g, {"loss": loss, **metrics}, world_size=ctx.world_size, group=group)
        return g, (metrics.pop("loss"), metrics)

    return grads


def check_schedule(schedule) -> None:
    """Raise ValueError for a KL schedule that sharding would change.

    The mean over ranks of per-rank gradients is the gradient of the global
    batch's loss only when the loss is a mean over examples. The capacity
    form (gamma * |KL - C|) and free bits (sum_j max(lambda, KL_j)) apply a
    nonlinear function to the batch-mean KL, so per-rank batches would give
    another gradient; they are refused rather than silently changed.
    """
    form = getattr(schedule, "form", None)
    if form in ("capacity", "free_bits"):
        raise ValueError(
            f"distributed=True needs a loss that is a mean over examples (constant beta, a beta warm-up, or IWAE); "
            f"got a {form!r} KL schedule, a nonlinear function of the batch-mean KL that per-rank batches would change"
        )


def all_reduce_mean(
    grads: Params, metrics: dict[str, Tensor], *, world_size: int, group=None
) -> tuple[Params, dict[str, Tensor]]:
    """The mean over ranks of ``grads`` and ``metrics`` (0-d, or (m,) for an ensemble), with ONE all_reduce.

    The leaves are flattened into one contiguous buffer (the gradients of a
    VAE are a few MB: one bucket is enough), summed across ranks, divided by
    ``world_size`` and split back into new tensors of the original shapes.
    """
    keys, names = tuple(grads), tuple(metrics)
    leaves = [grads[k] for k in keys] + [metrics[n] for n in names]
    flat = torch.cat([t.reshape(-1) for t in leaves])
    flat = funcol.all_reduce(flat, "sum", group if group is not None else dist.group.WORLD) / world_size  # type: ignore[arg-type]  # WORLD is set once a group is
    parts = [p.view(t.shape) for p, t in zip(torch.split(flat, [t.numel() for t in leaves]), leaves)]
    return dict(zip(keys, parts[: len(keys)])), dict(zip(names, parts[len(keys) :]))


def broadcast_state(tree, src: int = 0):
    """Every tensor of ``tree`` (params, an optimizer state) as rank ``src`` holds it.

    Called once before training, so all ranks start from the same params even if
    they were initialised or loaded differently. Returns new tensors.
    """
    leaves, spec = torch.utils._pytree.tree_flatten(tree)
    out = []
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            leaf = leaf.detach().clone().contiguous()
            dist.broadcast(leaf, src=src)
        out.append(leaf)
    return torch.utils._pytree.tree_unflatten(out, spec)


def guard(step: F, ctx: Context, what: str = "the gradient all_reduce") -> F:
    """``step``, with a failed collective turned into a :class:`DistributedError`."""

    def guarded(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except RuntimeError as e:
            if isinstance(e, DistributedError) or not _is_collective_error(e):
                raise
            raise DistributedError(
                f"rank {ctx.rank} of {ctx.world_size}: {what} failed; another rank probably died "
                f"or stalled (collectives time out after the process group's timeout; set it with "
                f"vaefunc.distributed.join(timeout=...) or VAEFUNC_DIST_TIMEOUT). Cause: {type(e).__name__}: {e}"
            ) from e

    return cast(F, guarded)


def _is_collective_error(e: BaseException) -> bool:
    if isinstance(e, (dist.DistError, dist.DistBackendError)):
        return True
    text = str(e).lower()
    return any(word in text for word in ("gloo", "nccl", "c10d", "connection", "timed out", "timeout", "peer"))


def any_rank(should_stop: Callable[[], bool], ctx: Context) -> Callable[[], bool]:
    """``should_stop`` agreed by all ranks: True on every rank as soon as one says so.

    Costs one more (1-element) all_reduce per step, so only used when a
    ``should_stop`` is given; without it, a rank stopping alone would leave the
    others waiting in the next all_reduce.
    """

    def agreed() -> bool:
        flag = torch.tensor([1.0 if should_stop() else 0.0], device=ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())  # a sync point, once per step, only with should_stop

    return guard(agreed, ctx, "the stop-flag all_reduce")
