"""The networks built and run: a backbone with resolved weights, its preprocessing, a compiled forward pass.

:func:`load_backbone` builds a :data:`uslib.backbones.BACKBONES` entry with
the weights :func:`uslib.weights.resolve_weights` chose
(:func:`build_model` for weights already resolved, with a digest of the
weight values that tells two initialisations apart); :func:`preprocess` is
the network's own ``preprocess_input``; :func:`feature_function` compiles
the batched forward pass once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import replace

import numpy as np

from .backbones import Backbone, get_backbone
from .precision import DTYPE_POLICY_LOCK
from .tfruntime import import_tensorflow
from .weights import WeightsInfo, WeightsUnavailableError, resolve_weights

__all__ = ["load_backbone", "build_model", "preprocess", "feature_function"]


def _values_digest(model, n_per_tensor: int = 4096) -> str:
    """SHA-256 (16 hex) of shapes and ~``n_per_tensor`` evenly strided values of every weight.

    A sample rather than every byte: cheap (no copy of VGG19's 0.5 GB), and
    enough to tell two initialisations or two weight files apart.
    """
    tf = import_tensorflow()

    h = hashlib.sha256()
    for w in model.weights:
        flat = tf.reshape(tf.convert_to_tensor(w.value if hasattr(w, "value") else w), [-1])
        step = max(1, int(flat.shape[0]) // n_per_tensor)
        a = np.ascontiguousarray(flat[::step].numpy())
        h.update(repr((tuple(w.shape), a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _private_python_random(seed: int):
    """Keras draws each layer's initialiser seed from Python's global ``random``; give it its own.

    Other threads of the process (a Dask worker's event loop, say) also draw
    from the global generator, which would make a seeded initialisation
    differ from one process to the next. A private ``random.Random(seed)``
    has the state ``keras.utils.set_random_seed(seed)`` gives the global one,
    so a process alone draws the same seeds either way.
    """
    import random

    try:
        from keras.src.random import seed_generator as sg
    except ImportError:  # pragma: no cover - private module moved: fall back to the global generator
        yield
        return
    with _PRIVATE_RANDOM_LOCK:
        saved = sg.python_random
        sg.python_random = random.Random(seed)
        try:
            yield
        finally:
            sg.python_random = saved


_PRIVATE_RANDOM_LOCK = threading.Lock()


def build_model(bb: Backbone, info: WeightsInfo):
    """Build the feature model for resolved weights; returns (model, info with values digest)."""
    import random

    import_tensorflow()
    import keras

    ctor = getattr(keras.applications, bb.constructor)
    kwargs = dict(include_top=bb.include_top, pooling=bb.pooling, input_shape=bb.input_shape)
    if info.kind == "random":
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            keras.utils.set_random_seed(int(info.seed or 0))
            with _private_python_random(int(info.seed or 0)):
                with DTYPE_POLICY_LOCK:  # not while another thread builds a bfloat16 twin
                    base = ctor(weights=None, **kwargs)
        finally:  # do not leave the caller's global generators reseeded
            random.setstate(py_state)
            np.random.set_state(np_state)
    else:
        try:
            with DTYPE_POLICY_LOCK:
                base = ctor(weights=info.path, **kwargs)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"{bb.name}: could not load weights from {info.path}: {exc}. "
                f"Expected the keras.applications file {bb.weights_file} ({bb.weights_url})."
            ) from exc
    if bb.feature_layer is None:
        model = base
    else:
        model = keras.Model(base.input, base.get_layer(bb.feature_layer).output, name=f"{bb.name}_{bb.feature_layer}")
    return model, replace(info, values_sha256=_values_digest(model))


def load_backbone(
    name: str | Backbone,
    *,
    weights: str | None = "imagenet",
    weights_path: str | os.PathLike | None = None,
    strict: bool = False,
    seed: int = 0,
    allow_download: bool = True,
):
    """Build a feature-extracting network with the best weights available.

    Parameters
    ----------
    name : str or Backbone
        ``"inception_v3"`` or ``"vgg19"``.
    weights, weights_path, strict, seed, allow_download
        See :func:`uslib.weights.resolve_weights`.

    Returns
    -------
    model : keras.Model
        Maps float32 ``(b, size_px, size_px, 3)`` preprocessed images
        (:func:`preprocess`) to ``(b, n_features)`` features.
    info : WeightsInfo
    """
    bb = get_backbone(name)
    info = resolve_weights(
        bb, weights=weights, weights_path=weights_path, strict=strict, seed=seed, allow_download=allow_download
    )
    return build_model(bb, info)


def preprocess(images: np.ndarray, backbone: str | Backbone) -> np.ndarray:
    """Apply the network's own ``keras.applications`` ``preprocess_input``.

    Parameters
    ----------
    images : ndarray, shape (b, size_px, size_px, 3)
        RGB images with values in [0, 255] (from
        :func:`uslib.augmentation.iter_images`). Not modified.
    backbone : str or Backbone

    Returns
    -------
    ndarray of float32, same shape
        InceptionV3: scaled to [-1, 1]; VGG19: RGB -> BGR minus the ImageNet
        channel means.
    """
    import importlib

    bb = get_backbone(backbone)
    import_tensorflow()
    mod = importlib.import_module(f"keras.applications.{bb.module}")
    x = np.array(images, dtype=np.float32, copy=True)  # preprocess_input works in place
    return np.asarray(mod.preprocess_input(x), dtype=np.float32)


def feature_function(model, backbone: str | Backbone):
    """A compiled batched inference function for ``model``.

    Wraps ``model(x, training=False)`` in :func:`tf.function` (graph mode,
    no XLA) with a batch dimension of any size, so it is traced once. A
    bfloat16 model (:func:`uslib.precision.with_precision`) takes the same float32 input and
    its features are returned as float32.

    Returns
    -------
    callable
        ``f(x)`` with ``x`` float32 ``(b, size_px, size_px, 3)``, already
        preprocessed, returning float32 ``(b, n_features)`` as numpy.
    """
    tf = import_tensorflow()

    bb = get_backbone(backbone)

    def forward(x):
        return tf.cast(model(x, training=False), tf.float32)

    fn = tf.function(
        forward,
        jit_compile=False,
        input_signature=[tf.TensorSpec((None, *bb.input_shape), tf.float32)],
        reduce_retracing=True,
    )

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(tf.convert_to_tensor(x, tf.float32)).numpy(), dtype=np.float32)

    return run
