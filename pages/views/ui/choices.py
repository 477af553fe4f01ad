"""What a visitor picked: a model (timm name and weights, or a run) on a device, and an image."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from vitviz.models import RUN_WEIGHTS, describe_weights
from vitviz.runs import RunError, run_folder_by_name, short_run_title

__all__ = ["DEFAULT_MODEL", "ImageChoice", "ModelChoice"]

# The model a page opens on: the bundled DINOv2 ViT-S/14, which loads with no network.
DEFAULT_MODEL = "vit_small_patch14_dinov2"


@dataclass(frozen=True)
class ModelChoice:
    """What the user picked: a timm name and a weights source, or a fine-tuned run by its name; a device."""

    name: str  # timm name, or the run's name when weights is RUN_WEIGHTS
    weights: str
    device: str

    @property
    def run(self) -> str | None:
        """The fine-tuned run's name, when the choice is a run."""
        return self.name if self.weights == RUN_WEIGHTS else None

    @property
    def shown(self) -> str:
        """How text names the choice: the timm name, or the run's given name (cut) or folder name."""
        if self.run is None:
            return self.name
        try:
            return short_run_title(run_folder_by_name(self.run))
        except RunError:
            return self.run

    @property
    def label(self) -> str:
        if self.run is not None:
            return describe_weights(RUN_WEIGHTS, self.run)
        return f"{self.name} · {describe_weights(self.weights)}"


@dataclass(frozen=True)
class ImageChoice:
    """The picked image, decoded to RGB, with a name for titles and a digest for caches."""

    image: Image.Image
    name: str
    digest: str
