"""The classic ``mnist.pkl.gz``, read WITHOUT executing arbitrary pickle code.

The file holds ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``:
float32 (n, 784) intensities in [0, 1] and int64 labels, 50,000 / 10,000 /
10,000. It is a Python 2 pickle, and a pickle can name any importable callable
(``os.system`` included) and call it while loading. :class:`SafeUnpickler`
resolves only the handful of names that rebuild NumPy arrays and refuses every
other one with :class:`UnsafePickleError`, before anything is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from ._base import Dataset, concat, DatasetError, UnsafePickleError, read_bytes, to_images, to_labels

PKL_SPLITS = ("train", "valid", "test", "all")


def _latin1_encode(obj: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to latin1: how protocol-2 pickles from Python 3 carry bytes."""
    if encoding != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}; only 'latin1' rebuilds bytes")
    return codecs.encode(obj, "latin1")


# (module, name) -> the object it stands for. NumPy 1 pickles say numpy.core,
# NumPy 2 ones numpy._core; neither module is imported here (numpy.core warns).
SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np.array(0).__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): np.array(0).__reduce__()[0],
    ("numpy.core.multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("numpy._core.multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds NumPy arrays (and tuples, lists, numbers, strings).

    Example:
        >>> SafeUnpickler(io.BytesIO(pickle.dumps(np.arange(3))), encoding="latin1").load()
        array([0, 1, 2])
    """

    def find_class(self, module: str, name: str):
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name} from a pickle: only NumPy arrays are allowed "
                "(a pickle can run any code it names; this file asked for more than data)"
            ) from None


def safe_loads(data: bytes, source: str = "<bytes>"):
    """Unpickle ``data`` with :class:`SafeUnpickler`; NumPy object arrays are refused too.

    Example:
        >>> safe_loads(pickle.dumps((np.zeros(2), np.ones(1))))
        (array([0., 0.]), array([1.]))
    """
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{source}: {e}") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DatasetError(f"{source}: truncated or corrupt pickle ({type(e).__name__}: {e})") from e
    _refuse_objects(obj, source)
    return obj


MAX_DEPTH = 32
"""The deepest nesting of tuples and lists a data pickle may hold (mnist.pkl.gz's is 2)."""


def _refuse_objects(obj, source: str) -> None:
    """No object arrays anywhere in ``obj``; each container is visited once (a pickle of shared nested
    lists can reference one list 1e40 times) and the nesting is at most :data:`MAX_DEPTH` deep."""
    seen: set[int] = set()
    todo = [(obj, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, np.ndarray) and node.dtype.hasobject:
            raise UnsafePickleError(f"{source}: refusing a NumPy array of Python objects; only numeric arrays are "
                                    "allowed")  # fmt: skip
        if isinstance(node, (tuple, list)) and id(node) not in seen:
            if depth >= MAX_DEPTH:
                raise DatasetError(f"{source}: the pickle's tuples and lists must nest at most {MAX_DEPTH} deep; "
                                   "this one nests deeper (not a data set)")  # fmt: skip
            seen.add(id(node))
            todo.extend((item, depth + 1) for item in node)


def load_mnist_pkl(path: Path, split: str = "train") -> Dataset:
    """``mnist.pkl.gz`` (or an uncompressed ``.pkl``): "train", "valid", "test" or "all".

    Raises:
        UnsafePickleError: the pickle names anything but NumPy's array rebuilders.
        DatasetError: truncated or corrupt, or not three (images, labels) pairs.
    """
    if split not in PKL_SPLITS:
        raise ValueError(f"split must be one of {PKL_SPLITS} for {path.name}; got {split!r}")
    obj = safe_loads(read_bytes(path), str(path))
    ok = isinstance(obj, (tuple, list)) and len(obj) == 3
    ok = ok and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in obj)
    ok = ok and all(isinstance(a, np.ndarray) for p in obj for a in p)
    if not ok:
        raise DatasetError(
            f"{path}: expected the mnist.pkl.gz layout ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) "
            f"of NumPy arrays; got {type(obj).__name__}"
        )
    parts = []
    for name, (x, y) in zip(PKL_SPLITS[:3], obj):
        if split in (name, "all"):
            images = to_images(x, f"{path} ({name})")
            parts.append(Dataset(images, to_labels(y, images.shape[0], f"{path} ({name})")))
    if len(parts) == 1:
        return parts[0]
    return concat(parts)
