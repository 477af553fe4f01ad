"""vitviz: see how Vision Transformers work — attention, rollout, patches and predictions."""

__version__ = "0.1.0"
