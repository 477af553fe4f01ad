"""vitviz: see how Vision Transformers work — attention, rollout, patches and predictions.

The public API a notebook needs:

    import vitviz

    loaded = vitviz.load_model("vit_small_patch14_dinov2", "bundled", "cpu")
    image = vitviz.builtin_photo("cat (chelsea)")
    record = vitviz.record_attention(loaded, image)    # every layer's attention, one forward
    relevance = vitviz.rollout_relevance(record)       # (rows, cols) over the token grid
    result = vitviz.explain(loaded, image, "gradcam")  # any method of vitviz.METHOD_NAMES
"""

from vitviz.images import ImageDecodeError, builtin_photo, decode_image, load_image_file
from vitviz.maths.attention import AttentionRecord, class_attention_map, record_attention, rollout_relevance
from vitviz.methods import METHOD_NAMES, ExplanationResult, available_methods
from vitviz.methods import explanation_map as explain
from vitviz.models import LoadedModel, ModelError, load_model
from vitviz.predict import Prediction, predict
from vitviz.weights import WeightsError

__version__ = "0.1.0"

__all__ = [
    "METHOD_NAMES",
    "AttentionRecord",
    "ExplanationResult",
    "ImageDecodeError",
    "LoadedModel",
    "ModelError",
    "Prediction",
    "WeightsError",
    "available_methods",
    "builtin_photo",
    "class_attention_map",
    "decode_image",
    "explain",
    "load_image_file",
    "load_model",
    "predict",
    "record_attention",
    "rollout_relevance",
]
