"""The features stage: ImageNet CNN features of the image set, cached on disk.

Byra et al. (2018, Section II.E) use two ImageNet-trained networks as fixed
feature extractors: InceptionV3 (global average pool, 2048 features) and
VGG19 (first fully connected layer ``fc1``, 4096 features). The stage is
split by job; this module gathers their public names, so chapters, tests and
benchmarks import one place:

- :mod:`uslib.backbones`: the registry of networks and their batch-size rule;
- :mod:`uslib.weights`: which weights a network gets (Keras cache, local
  file, verified download, or a seeded random start) and their labels;
- :mod:`uslib.precision`: float32 or bfloat16 arithmetic (the CPU checks and
  the network in that precision);
- :mod:`uslib.tfruntime`: TensorFlow imported lazily and quietly;
- :mod:`uslib.networks`: a network built with its weights, its
  preprocessing and its compiled forward pass;
- :mod:`uslib.extraction`: :func:`extract_features`, the cached extraction
  of a manifest's images, with prefetching;
- :mod:`uslib.featurecache`: the cache's keys, chunks and sidecar;
- :mod:`uslib.cluster`: the missing images computed on a Dask cluster.
"""

from __future__ import annotations

from .backbones import BACKBONES, DEFAULT_BATCH_SIZE, KERAS_APPS_URL, Backbone, default_batch_size, get_backbone
from .cluster import lesion_features
from .extraction import FeatureSet, Prefetched, extract_features, prefetched
from .featurecache import image_content_keys
from .networks import build_model, feature_function, load_backbone, preprocess
from .precision import (
    BF16_CPU_FLAGS,
    PRECISIONS,
    PrecisionUnsupportedError,
    bfloat16_support,
    check_precision,
    cpu_flags,
    with_precision,
)
from .tfruntime import TF_NOISE, THREAD_ENVS, import_tensorflow
from .weights import (
    WEIGHTS_BASE_URL_ENV,
    WeightsInfo,
    WeightsUnavailableError,
    WeightsWarning,
    download_weights,
    keras_cache_dir,
    locate_weights,
    resolve_weights,
    weights_md5_env,
    weights_source,
)

__all__ = [
    "Backbone",
    "BACKBONES",
    "get_backbone",
    "WeightsInfo",
    "WeightsUnavailableError",
    "WeightsWarning",
    "FeatureSet",
    "keras_cache_dir",
    "KERAS_APPS_URL",
    "WEIGHTS_BASE_URL_ENV",
    "weights_md5_env",
    "weights_source",
    "locate_weights",
    "download_weights",
    "resolve_weights",
    "load_backbone",
    "build_model",
    "preprocess",
    "feature_function",
    "extract_features",
    "prefetched",
    "Prefetched",
    "lesion_features",
    "image_content_keys",
    "PRECISIONS",
    "BF16_CPU_FLAGS",
    "PrecisionUnsupportedError",
    "cpu_flags",
    "bfloat16_support",
    "check_precision",
    "DEFAULT_BATCH_SIZE",
    "default_batch_size",
    "import_tensorflow",
    "TF_NOISE",
    "THREAD_ENVS",
    "with_precision",
]
