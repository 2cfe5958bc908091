"""The feature-extracting networks: what each is, and how many images it takes per pass.

Byra et al. (2018, Section II.E) use two ImageNet-trained networks as fixed
feature extractors: InceptionV3 (output of the global average pool, 2048
features) and VGG19 (output of the first fully connected layer ``fc1``, 4096
features). :data:`BACKBONES` describes both (a registry of plain data, no
TensorFlow); :func:`get_backbone` looks one up by name;
:func:`default_batch_size` is each network's batch-size rule (issue 12).

Adding a network: one :class:`Backbone` entry here (and its batch rule in
:data:`DEFAULT_BATCH_SIZE`); :mod:`uslib.networks` builds any entry,
:mod:`uslib.weights` finds its weights file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Backbone", "BACKBONES", "KERAS_APPS_URL", "get_backbone", "DEFAULT_BATCH_SIZE", "default_batch_size"]

#: Where ``keras.applications`` downloads its weights from.
KERAS_APPS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    """A feature-extracting network of ``keras.applications``.

    Parameters
    ----------
    name : str
        Registry key.
    constructor : str
        Name of the ``keras.applications`` constructor (``"InceptionV3"``).
    module : str
        ``keras.applications`` submodule holding ``preprocess_input``.
    size_px : int
        Side of the square RGB input in pixels.
    n_features : int
        Length of the feature vector.
    include_top : bool
        Whether the classifier head is built (VGG19's ``fc1`` is part of it).
    pooling : str or None
        ``pooling`` argument of the constructor.
    feature_layer : str or None
        Name of the layer whose output is the feature vector; None for the
        model's output.
    weights_file : str
        File name of the ImageNet weights in the Keras cache.
    weights_url : str
        Where ``keras.applications`` downloads them from.
    weights_md5 : str
        MD5 of the published weights file (as checked by Keras).
    weights_size_bytes : int
        Approximate size of the published weights file (for the pre-flight
        check's download estimate).

    Examples
    --------
    >>> bb = BACKBONES["vgg19"]
    >>> bb.input_shape, bb.n_features, bb.feature_layer
    ((224, 224, 3), 4096, 'fc1')
    """

    name: str
    constructor: str
    module: str
    size_px: int
    n_features: int
    include_top: bool
    pooling: str | None
    feature_layer: str | None
    weights_file: str
    weights_url: str
    weights_md5: str
    weights_size_bytes: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size_px, self.size_px, 3)


#: The paper's two networks.
BACKBONES: dict[str, Backbone] = {
    "inception_v3": Backbone(
        name="inception_v3",
        constructor="InceptionV3",
        module="inception_v3",
        size_px=299,
        n_features=2048,
        include_top=False,
        pooling="avg",
        feature_layer=None,
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_url=KERAS_APPS_URL + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="bcbd6486424b2319ff4ef7d526e38f63",
        weights_size_bytes=87_910_968,
    ),
    "vgg19": Backbone(
        name="vgg19",
        constructor="VGG19",
        module="vgg19",
        size_px=224,
        n_features=4096,
        include_top=True,
        pooling=None,
        feature_layer="fc1",
        weights_file="vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        weights_url=KERAS_APPS_URL + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        weights_md5="cbe5617147190e668d6c5d5026f83318",
        weights_size_bytes=574_710_816,
    ),
}


def get_backbone(backbone: str | Backbone) -> Backbone:
    """The :class:`Backbone` named ``backbone`` (a :class:`Backbone` is returned as it is).

    Examples
    --------
    >>> get_backbone("vgg19").n_features
    4096
    """
    if isinstance(backbone, Backbone):
        return backbone
    try:
        return BACKBONES[str(backbone)]
    except KeyError:
        raise KeyError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}") from None


#: Images per forward pass when the profile leaves ``batch_size`` null.
#: Why: on a CPU the convolutions are matrix products whose rows are batch x
#: height x width; InceptionV3's last blocks are 8 x 8 and 17 x 17 pixels, so
#: at 16 images their products are too small for oneDNN to keep the vector
#: units busy (issue 12 measured 51 % of the sgemm roofline at 16 images, 79 %
#: at 32 on 2 Zen 5 cores); 64 images keep the 8 x 8 layers at 4,096 rows.
#: VGG19's smallest maps are 14 x 14, already 3,136 rows at 16 images; 32
#: images amortise ``fc1``'s 411 MB of weights, read once per batch. Memory
#: stays near 2 GiB of activations for either. ``benchmarks/bench_features.py``
#: measures every batch size against the roofline and flags the default when
#: another size beats it by more than 3 %.
DEFAULT_BATCH_SIZE: dict[str, int] = {"inception_v3": 64, "vgg19": 32}


def default_batch_size(backbone: str | Backbone, batch_size: int | None = None) -> int:
    """The batch size to use: ``batch_size`` if given, else the backbone's rule (:data:`DEFAULT_BATCH_SIZE`).

    Examples
    --------
    >>> default_batch_size("inception_v3"), default_batch_size("vgg19"), default_batch_size("vgg19", 8)
    (64, 32, 8)
    """
    bb = get_backbone(backbone)
    if batch_size is None:
        return DEFAULT_BATCH_SIZE.get(bb.name, 16)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return int(batch_size)
