"""One meaning per name: the module behind ``vaefunc.train`` is ``vaefunc.training``, and the old
dotted path still imports (with a DeprecationWarning) while ``vaefunc.train`` stays the function."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import vaefunc
import vaefunc.training


def test_vaefunc_train_is_the_function_after_an_import_from_its_old_module_path():
    with pytest.warns(DeprecationWarning, match="vaefunc.training"):
        from vaefunc.train import TrainResult, setup
    assert TrainResult is vaefunc.TrainResult and setup is vaefunc.training.setup
    assert callable(vaefunc.train) and vaefunc.train is vaefunc.training.train
    assert not isinstance(vaefunc.train, type(vaefunc))  # a function, not the module


def test_the_old_module_path_names_the_new_one_and_refuses_unknown_names():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ImportError, match="no_such_name"):
            from vaefunc.train import no_such_name  # noqa: F401
    old = sys.modules["vaefunc.train"]
    with pytest.warns(DeprecationWarning, match="the module vaefunc.train is now vaefunc.training"):
        assert old.AUTO_COMPILE_MIN_SECONDS == vaefunc.training.AUTO_COMPILE_MIN_SECONDS
    assert "setup" in dir(old)


def test_the_old_module_path_works_in_a_fresh_interpreter_before_import_vaefunc():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    from vaefunc.train import setup\nexcept DeprecationWarning as e:\n    print('warned:', e)\n"
            "import vaefunc; print(type(vaefunc.train).__name__, hasattr(vaefunc.training, 'setup'))\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "warned: the module vaefunc.train is now vaefunc.training" in out.stdout
    assert out.stdout.strip().endswith("function True")


def test_one_meaning_per_name_and_the_older_names_still_read():
    """``setup`` builds a training run and ``join`` joins torchrun's group; the run-level compile rule for
    params is ``compiles_for_params`` (``should_compile`` is vaefunc.runners' rule); the command line's
    run is a ``Job``. The older names read the same functions."""
    from vaefunc import distributed, runners, training
    from vaefunc.cli import session

    assert distributed.setup is distributed.join and training.fit is training.fit_run
    assert training.should_compile is training.compiles_for_params is not runners.should_compile
    assert not hasattr(session, "Run") and session.Job is not training.Run
