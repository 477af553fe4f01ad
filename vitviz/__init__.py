"""vitviz: see how Vision Transformers work — attention, rollout, patches and predictions.

The public API a notebook needs:

    import vitviz

    loaded = vitviz.load_model("vit_small_patch14_dinov2", "bundled", "cpu")
    image = vitviz.builtin_photo("cat (chelsea)")
    view = vitviz.image_view(image, loaded.facts)     # what the model sees: made once, passed down
    record = vitviz.record_attention(loaded, view)    # every layer's attention, one forward
    relevance = vitviz.rollout_relevance(record)      # (rows, cols) over the token grid
    result = vitviz.explain(loaded, view, "gradcam")  # any method of vitviz.METHOD_NAMES

Each name loads its module on first use: importing one light module (say `vitviz.images`, which the
CLI and the pages import first) must not pull in torch's explanation libraries, scikit-learn and
scikit-image through this package's own import.
"""

from __future__ import annotations

import importlib
from typing import Any

# `predict` is also the name of a submodule: once anything imports vitviz.predict, Python sets the
# package attribute to that module and __getattr__ below is never asked. Binding the function here
# keeps `vitviz.predict(...)` the function (importing it pulls in torch and timm, not scikit-*).
from vitviz.predict import Prediction as Prediction
from vitviz.predict import predict as predict

__version__ = "0.1.0"

# Public name → (module, attribute) that defines it.
_PUBLIC: dict[str, tuple[str, str]] = {
    "ImageDecodeError": ("vitviz.images", "ImageDecodeError"),
    "builtin_photo": ("vitviz.images", "builtin_photo"),
    "decode_image": ("vitviz.images", "decode_image"),
    "load_image_file": ("vitviz.images", "load_image_file"),
    "ImageView": ("vitviz.preprocess", "ImageView"),
    "image_view": ("vitviz.preprocess", "image_view"),
    "AttentionRecord": ("vitviz.maths.attention", "AttentionRecord"),
    "class_attention_map": ("vitviz.maths.attention", "class_attention_map"),
    "record_attention": ("vitviz.forward.attention", "record_attention"),
    "rollout_relevance": ("vitviz.maths.attention", "rollout_relevance"),
    "METHOD_NAMES": ("vitviz.methods", "METHOD_NAMES"),
    "ExplanationResult": ("vitviz.methods", "ExplanationResult"),
    "available_methods": ("vitviz.methods", "available_methods"),
    "explain": ("vitviz.methods", "explanation_map"),
    "LoadedModel": ("vitviz.models", "LoadedModel"),
    "ModelError": ("vitviz.models", "ModelError"),
    "load_model": ("vitviz.models", "load_model"),
    "WeightsError": ("vitviz.weights", "WeightsError"),
}

__all__ = sorted([*_PUBLIC, "Prediction", "predict"])


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'vitviz' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
    return __all__
