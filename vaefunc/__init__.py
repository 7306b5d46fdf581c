"""vaefunc: a functional, JAX-style Variational Autoencoder in PyTorch.

Models are plain dicts of tensors; every model operation is a pure function of
(params, inputs); torch.func drives training and torch.compile fuses the step.
"""

from . import _launch

# The vaefunc command only (else a no-op): Ctrl-C or SIGTERM while torch imports waits for the imports,
# then exits with one line (vaefunc/_launch.py).
_launch.hold_signals()

from . import data as data  # the subpackage vaefunc.data (not in __all__: a module, not a name)
from .augment import augment as augment
from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import CheckpointError as CheckpointError
from .checkpoint import load as load
from .checkpoint import save as save
from .ensemble import EnsembleResult as EnsembleResult
from .ensemble import init_many as init_many
from .ensemble import make_ensemble_step as make_ensemble_step
from .ensemble import stack as stack
from .ensemble import train_many as train_many
from .ensemble import unstack as unstack
from .interop import VAEModule as VAEModule
from .interop import from_state_dict as from_state_dict
from .interop import to_module as to_module
from .likelihoods import continuous_bernoulli_log_norm as continuous_bernoulli_log_norm
from .likelihoods import continuous_bernoulli_log_prob as continuous_bernoulli_log_prob
from .losses import bernoulli_log_prob as bernoulli_log_prob
from .losses import gaussian_log_prob as gaussian_log_prob
from .losses import kl_normal as kl_normal
from .metrics import anomaly_score as anomaly_score
from .optim import AdamState as AdamState
from .optim import Optimizer as Optimizer
from .optim import adam as adam
from .optim import fused_adam as fused_adam
from .optim import apply_updates as apply_updates
from .optim import chain as chain
from .optim import clip_by_global_norm as clip_by_global_norm
from .optim import scale_by_adam as scale_by_adam
from .optim import scale_by_learning_rate as scale_by_learning_rate
from .optim import sgd as sgd
from .presets import preset as preset
from .schedules import KLSchedule as KLSchedule
from .schedules import capacity_annealing as capacity_annealing
from .schedules import constant_beta as constant_beta
from .schedules import free_bits as free_bits
from .schedules import iwae_paper_lr as iwae_paper_lr
from .schedules import linear_warmup as linear_warmup
from .spec import VAE as VAE
from .step import make_step as make_step
from .loop import DivergenceWarning as DivergenceWarning
from .training import NonFiniteLossError as NonFiniteLossError
from .config import TrainConfig as TrainConfig
from .training import TrainResult as TrainResult
from .training import TrainState as TrainState
from .inputs import paper_alpha as paper_alpha
from .inputs import sum_alpha as sum_alpha
from .training import train as train

# vaefunc 0.1's params-first functions (vaefunc.legacy, the top floor; vaefunc.model is its 0.1 name);
# new code uses the VAE spec
from . import model as model  # not in __all__: a module, not a name
from .legacy import decode as decode
from .legacy import elbo as elbo
from .legacy import encode as encode
from .legacy import init as init
from .legacy import init_obs_logstd as init_obs_logstd
from .legacy import init_prior as init_prior
from .legacy import iwae as iwae
from .legacy import kl_monte_carlo as kl_monte_carlo
from .legacy import log_likelihood as log_likelihood
from .legacy import log_weights as log_weights
from .legacy import make_elbo_loss as make_elbo_loss
from .legacy import make_loss as make_loss
from .legacy import preset_train_kwargs as preset_train_kwargs
from .legacy import prior_log_prob as prior_log_prob
from .legacy import reparameterize as reparameterize
from .legacy import sample as sample
from .legacy import moved_attribute as _moved_attribute
from .legacy import register_moved_module as _register_moved_module

# vaefunc/train.py is now vaefunc/training.py (the function vaefunc.train hid the module):
# `from vaefunc.train import setup` still works, with a DeprecationWarning
_register_moved_module("vaefunc.train", "vaefunc.training")

_launch.release_signals()

__version__ = "0.2.0"

__all__ = [
    # the spec-first API, by what it is for
    # the spec and one model's training
    "VAE",
    "TrainConfig",
    "train",
    "TrainResult",
    "TrainState",
    "NonFiniteLossError",
    "DivergenceWarning",
    "preset",
    "augment",
    "paper_alpha",
    "sum_alpha",
    # many models at once
    "train_many",
    "EnsembleResult",
    "init_many",
    "make_ensemble_step",
    "stack",
    "unstack",
    # optimizers and the step
    "Optimizer",
    "AdamState",
    "adam",
    "fused_adam",
    "sgd",
    "chain",
    "clip_by_global_norm",
    "scale_by_adam",
    "scale_by_learning_rate",
    "apply_updates",
    "make_step",
    # KL schedules
    "KLSchedule",
    "constant_beta",
    "linear_warmup",
    "capacity_annealing",
    "free_bits",
    "iwae_paper_lr",
    # log densities and scores
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "continuous_bernoulli_log_prob",
    "continuous_bernoulli_log_norm",
    "kl_normal",
    "anomaly_score",
    # checkpoints and nn.Module
    "save",
    "load",
    "Checkpoint",
    "CheckpointError",
    "to_module",
    "from_state_dict",
    "VAEModule",
    # vaefunc 0.1's params-first functions (vaefunc.legacy): still working; new code uses the VAE spec
    "init",
    "encode",
    "decode",
    "reparameterize",
    "sample",
    "elbo",
    "iwae",
    "log_weights",
    "log_likelihood",
    "make_loss",
    "make_elbo_loss",
    "init_prior",
    "prior_log_prob",
    "kl_monte_carlo",
    "init_obs_logstd",
    "preset_train_kwargs",
]


_MOVED = {"GraphedStep": "vaefunc.accel"}
"""Names importable from the front door that are not part of it (implementation details): each still
resolves, from its module, with a DeprecationWarning."""


def __getattr__(name: str):
    if name in _MOVED:
        return _moved_attribute("vaefunc", name, _MOVED[name])
    raise AttributeError(f"module 'vaefunc' has no attribute {name!r}")
