"""vaefunc 0.1's module of the params-first network functions: :mod:`vaefunc.legacy` under its old name.

``vaefunc.model.encode(params, x)`` is :func:`vaefunc.legacy.encode`, and so on;
new code uses the spec (``model = vaefunc.VAE(...)``, ``model.encode(params, x)``).
The constants and readers it re-exported stay here under their 0.1 names.
"""

from __future__ import annotations

from .layout import Architecture as Architecture
from .layout import architecture as architecture
from .legacy import data_dim as data_dim
from .legacy import decode as decode
from .legacy import encode as encode
from .legacy import flat_features as flat_features
from .legacy import init as init
from .legacy import input_shape as input_shape
from .legacy import latent_dim as latent_dim
from .legacy import macs_per_example as macs_per_example
from .legacy import n_classes as n_classes
from .legacy import reparameterize as reparameterize
from .legacy import sample as sample
from .network import LOGVAR_MAX as LOGVAR_MAX
from .network import LOGVAR_MIN as LOGVAR_MIN
from .network import flatten as flatten
from .network import flatten_example as flatten_example
from .network import one_hot as one_hot
from .nn import ACTIVATIONS as ACTIVATIONS
from .spec import ARCHS as ARCHS
from .spec import CONV_CHANNELS as CONV_CHANNELS
