"""What ``train`` and ``sweep`` share: the device and torchrun, a run set up (fresh or resumed),
the signal handlers, and how a run ends when it is interrupted or goes non-finite.

Ctrl-C (SIGINT) or SIGTERM during training finishes the current step, writes
the checkpoint, prints how to resume, and exits with 128 + the signal number.
Under torchrun (WORLD_SIZE > 1) the run trains with ``distributed=True`` and
only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .. import _progress
from .. import data as vdata
from ..checkpoint import Checkpoint, load, save
from ..loop import NonFiniteLossError
from ..spec import VAE
from ..ensemble import EnsembleResult
from ..plan import RunPlan, plan
from . import datasets, rundir
from .parser import UsageError
from .settings import Settings, apply_file, check_own_run, check_resume, from_args, from_json, to_json

PROGRESS: dict[str, bool | str] = {"auto": True, "always": "always", "never": False}


class Job(NamedTuple):
    """A training run set up: its folder, settings, spec, data and where it resumes from."""

    path: Path
    settings: Settings  # with the data's shape and sizes, the device and the model's full spec
    model: VAE
    config: dict[str, Any]  # config.json, and the checkpoint's config
    device: torch.device
    writer: bool  # False on torchrun ranks other than 0
    train: vdata.Dataset
    test: vdata.Dataset
    resume: Checkpoint | None  # the checkpoint a resumed run continues
    metrics: rundir.MetricsLog

    def save(self, params, state, name: str = rundir.CHECKPOINT) -> Path:
        return save(self.path / name, params, model=self.model, config=self.config, state=state)



def device(name: str) -> torch.device:
    """The device a ``--device`` names (auto: cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (torch sees none); use --device cpu")
    return torch.device(name)


def open_run(args: Any, *, command: str) -> Job:
    """Set a ``train`` or ``sweep`` run up: its settings, data and spec, checked; config.json written."""
    rundir.check_out(args.out)
    apply_file(args)  # --config: before --device is read, which it may set
    dev = device(args.device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:  # under torchrun: data-parallel, and only rank 0 writes
        from .. import distributed as dp

        ctx = dp.join(dev)
        dev, rank = ctx.device, ctx.rank
    line = "vaefunc " + shlex.join(args.argv)
    lock = None
    if args.resume:
        _locked(args, _resume_path(args), rank)  # before the run's files are read
        path, settings, ckpt, first = _resumed(args, dev, command)
        run_id = rundir.read_config(path).get("run_id") or uuid.uuid4().hex  # a run of older vaefunc gets one now
    else:
        settings, ckpt, first, run_id = from_args(args), None, line, uuid.uuid4().hex  # a bad flag: no folder made
        if rank == 0:  # the folder taken, then checked: one step, so two runs started at once cannot share it
            lock = _claim(args, command)
            path = lock.run
        else:
            path = Path(args.out) if args.out is not None else rundir.fresh_run_dir(args.data, _suffix(command))
    try:
        train, test = datasets.load(settings.data, "train", stream=True), datasets.load(settings.data, "test")
        if datasets.streamed(train) and rank == 0:
            log(f"vaefunc: streaming the {train.images.shape[0]:,} training images from disk: they would decode to "
                f"{_gib(train.images.nbytes)}, over VAEFUNC_STREAM_BYTES ({_gib(vdata.stream_bytes())})")
        if ckpt is None:
            datasets.check_classes(settings.model["n_classes"], (train, test))
            model = VAE(tuple(train.images.shape[1:]), **settings.model)
        else:
            model = ckpt.model
            datasets.check_fits(model, train)
        config = settings.config.replace(device=str(dev), progress=PROGRESS[args.progress], distributed=distributed,
                                         threads=args.threads or None)  # fmt: skip
        data = settings.data | {"input_shape": list(train.images.shape[1:]), "n_train": train.images.shape[0],
                                "n_test": test.images.shape[0]}  # fmt: skip
        settings = Settings(model.to_dict(), config, data, settings.preset)
        config_json = to_json(settings, command=first or line, resumed_with=line if args.resume else None,
                              run_id=run_id)  # fmt: skip
        if rank == 0:
            rundir.write_config(path, config_json)
    except BaseException:
        if lock is not None:
            lock.discard()  # a bad flag or data file leaves no folder behind
        raise
    metrics = rundir.MetricsLog(path, upto=ckpt.state.epoch if ckpt else 0, write=rank == 0)
    return Job(path, settings, model, config_json, dev, rank == 0, train, test, ckpt, metrics)


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.3g} MiB"


def _suffix(command: str) -> str:
    return "-sweep" * (command == "sweep")


def _claim(args: Any, command: str) -> rundir.Lock:
    """The fresh run's folder, locked for this command and then checked to hold no run: the lock first, so
    that of two commands started at once on one folder the second fails (in use, or holding a run). A
    numbered runs/NAME-k taken by another command in between is passed over for the next free name."""
    for _ in range(1000):
        auto = args.out is None
        path = Path(args.out) if not auto else rundir.fresh_run_dir(args.data, _suffix(command))
        try:
            lock = rundir.Lock(path)
        except UsageError:
            if auto:
                continue
            raise
        if auto and path not in lock.made:  # another command made it between the name and the lock
            lock.release()
            continue
        args.cleanup.callback(lock.release)
        if (path / rundir.CHECKPOINT).exists():  # a config.json alone: a run stopped before its first step
            lock.release()
            raise UsageError(f"{path} already holds a run: pass --resume to continue it, or choose another --out")
        return lock
    raise UsageError(f"no free run folder next to {rundir.fresh_run_dir(args.data, _suffix(command))}; pass --out")


def _locked(args: Any, path: Path, rank: int) -> Path:
    """``path``, locked for this command (rank 0 writes, so rank 0 locks), the lock released when it ends."""
    if rank == 0:
        args.cleanup.callback(rundir.Lock(path).release)
    return path


def _resume_path(args: Any) -> Path:
    if args.out is None:
        raise UsageError("--resume needs --out RUN_DIR, the run to continue")
    if not Path(args.out).is_dir():
        raise UsageError(f"{args.out} holds no run to resume (no such folder)")
    return Path(args.out)


def _resumed(args: Any, dev: torch.device, command: str) -> tuple[Path, Settings, Checkpoint, str | None]:
    """The run in --out: its settings (--epochs from the command line), checkpoint and first command."""
    path = _resume_path(args)
    config = rundir.read_config(path)
    if config is None or not (path / rundir.CHECKPOINT).is_file():
        raise UsageError(f"{path} holds no run to resume (expected {path / rundir.CONFIG} and "
                         f"{path / rundir.CHECKPOINT})")  # fmt: skip
    ckpt = load(path / rundir.CHECKPOINT, device=dev)
    if ckpt.state is None:
        raise UsageError(f"{path / rundir.CHECKPOINT} holds no training state to resume from")
    check_own_run(config, ckpt, path / rundir.CHECKPOINT)
    m = rundir.members(ckpt)
    if (m is not None) != (command == "sweep"):
        what = f"a sweep of {m} models" if m is not None else "one model's run"
        other = "sweep" if m is not None else "train"
        raise UsageError(f"{path} is {what}; resume it with: vaefunc {other} --out {shlex.quote(str(path))} --resume")
    settings = from_json(config)._replace(model=ckpt.model.to_dict())
    check_resume(settings, args)
    trained_on = settings.config.device or "cpu"
    if torch.device(trained_on).type != dev.type:
        raise UsageError(f"the run trained on {trained_on}; resume it there (--device {torch.device(trained_on).type})"
                         ": its random generators' states are device-specific")  # fmt: skip
    if "epochs" in args.given:
        if args.epochs < ckpt.state.epoch:
            raise UsageError(f"{path} has trained {ckpt.state.epoch} epochs; --epochs {args.epochs} would end "
                             f"before that (give at least {ckpt.state.epoch} to train further)")  # fmt: skip
        settings = settings._replace(config=settings.config.replace(epochs=args.epochs))
    return path, settings, ckpt, config.get("command")


def train_job(run: Job, trainer: Callable[..., Any], params: Any, state: Any, on_epoch: Callable[..., None], *,
        command: str) -> tuple[Any, int | None]:  # fmt: skip
    """``trainer`` (:func:`vaefunc.train` or :func:`vaefunc.train_many`) on the run's training split and labels,
    from ``params`` (and a resumed ``state``), with the signals handled: (its result, None), or (the result,
    the exit code) of an interrupted run, after writing its checkpoint. A non-finite run saves
    last_finite.safetensors."""
    labels = datasets.training_labels(run.model, run.train, run.settings.data)
    stop = _StopFlag()
    lines = _progress.plain_lines(f"vaefunc {command}") if run.settings.config.progress is True else contextlib.nullcontext()
    with stop.installed(), lines:  # off a terminal, --progress auto prints a line every 10 s
        try:
            result = trainer(params, run.train.images, model=run.model, config=run.settings.config, labels=labels,
                             resume=state, on_epoch=on_epoch, should_stop=stop)  # fmt: skip
        except NonFiniteLossError as e:
            if not run.writer:
                raise
            path = save(run.path / rundir.LAST_FINITE, e.params, model=run.model, opt_state=e.opt_state,
                        config=run.config)  # fmt: skip
            raise NonFiniteLossError(f"{e} The last finite params are in {path}.", epoch=e.epoch, step=e.step,
                                     params=e.params, opt_state=e.opt_state, history=e.history,
                                     members=e.members) from e  # fmt: skip
    if not result.interrupted:
        return result, None
    code = 128 + (stop.signum or signal.SIGINT)  # no signal here: another rank's stopped the run
    if run.writer:
        path, st = run.save(result.params, result.state), result.state
        print(f"vaefunc: interrupted at epoch {st.epoch + 1}, step {st.step} of {steps_per_epoch(run, _members(result))}; the "
              f"checkpoint is in {path}\nresume with: vaefunc {command} --out {shlex.quote(str(run.path))} --resume",
              file=sys.stderr)  # fmt: skip
    return result, code


def _members(result: Any) -> int | None:
    """m for a sweep's result (:class:`vaefunc.EnsembleResult`), None for one model's."""
    return len(result.history) if isinstance(result, EnsembleResult) else None


def planned(run: Job, members: int | None = None) -> RunPlan:
    """The run's derived facts, from the function train derives them with (:func:`vaefunc.plan.plan`):
    the training split's rows (and labelled rows), the command line's float32 params, ``members``."""
    n, labelled = run.train.images.shape[0], None
    if run.model.semi_supervised:
        labelled = int((datasets.training_labels(run.model, run.train, run.settings.data) >= 0).sum())
    return plan(run.model, run.settings.config, rows=n, device=run.device, dtype=torch.float32, members=members,
                labelled=labelled)  # fmt: skip


def steps_per_epoch(run: Job, members: int | None = None) -> int:
    """Steps in one epoch, as train takes them (a semi-supervised run repeats its labelled examples)."""
    return planned(run, members).steps_per_epoch


def compiled(run: Job, members: int | None = None) -> bool:
    """Whether the run's step is compiled (the ``compile="auto"`` rule, as train applies it)."""
    return planned(run, members).compiled


def how(run: Job, members: int | None = None) -> str:
    """How the step runs, as a summary says it: "eager" or "compiled", and "bf16 matmuls" when
    autocast applies (``--autocast``, as train resolves it for the command line's float32 params)."""
    facts = planned(run, members)
    return ("compiled" if facts.compiled else "eager") + (", bf16 matmuls" if facts.autocast else "")


def log(message: str) -> None:
    """A line on stderr that leaves the progress bar whole."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


class _StopFlag:
    """Set by SIGINT / SIGTERM; ``train`` polls it after every step. A second signal quits at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log(f"\nvaefunc: {signal.Signals(signum).name}: finishing this step and writing a checkpoint "
            "(send it again to quit at once)")  # fmt: skip

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGINT and SIGTERM inside the block; the previous handlers come back after it."""
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)
