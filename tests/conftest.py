"""Test set-up: no test may reach the network, and the UI-free library must stay UI-free."""

import os
import tempfile

# Set before timm / huggingface_hub are imported anywhere, so no test can download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TIMM_FUSED_ATTN", "1")
# No test reads or writes the user's runs folder (nor its background-job slots): the session has its own.
os.environ["VITVIZ_RUNS_DIR"] = tempfile.mkdtemp(prefix="vitviz-test-runs-")

import pytest
import timm
import torch
from PIL import Image

from vitviz.images import builtin_photo
from vitviz.models import LoadedModel, load_model, untrained_twin

# Tiny random models of every family the app knows, built from real timm architectures.
TINY_MODELS: dict[str, tuple[str, dict]] = {
    "vit": ("vit_tiny_patch16_224", {"img_size": 64, "depth": 2}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {"img_size": 64, "depth": 2}),
    "registers": ("vit_small_patch14_reg4_dinov2", {"img_size": 56, "depth": 2}),
    "hybrid": ("vit_tiny_r_s16_p8_224", {"img_size": 96, "depth": 2}),
    "vit_rectangular": ("vit_tiny_patch16_224", {"img_size": (48, 64), "depth": 3}),
    "cnn": ("resnet18", {}),
}


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        key: timm.create_model(name, pretrained=False, **kwargs).eval()
        for key, (name, kwargs) in TINY_MODELS.items()
    }


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """Three real photos of different scenes."""
    return [builtin_photo(name) for name in ("cat (chelsea)", "coffee", "astronaut")]


@pytest.fixture(scope="session")
def cat() -> Image.Image:
    return builtin_photo("cat (chelsea)")


@pytest.fixture(scope="session")
def dinov2() -> LoadedModel:
    """The bundled DINOv2 ViT-S/14 at 224 px, loaded once for every test that reads real weights."""
    return load_model("vit_small_patch14_dinov2", "bundled", "cpu")


@pytest.fixture(scope="session")
def dinov2_twin(dinov2) -> LoadedModel:
    return untrained_twin(dinov2)


@pytest.fixture(scope="session")
def app_url():
    """A `streamlit run` of the whole app on loopback, shared by the browser tests."""
    from tests.support.browser import streamlit_app

    with streamlit_app() as url:
        yield url


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser context (own cookies and session) and page per test."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1700})
    yield context.new_page()
    context.close()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def pytest_report_header(config) -> list[str]:
    """The CPU and what torch uses of it, printed before the tests: a failure traces to its machine."""
    blas = next(
        (
            part.split("=", 1)[1]
            for part in torch.__config__.show().replace(",", " ").split()
            if "BLAS_INFO=" in part
        ),
        "unknown",
    )
    return [
        f"cpu: {_cpu_model()}, {os.cpu_count()} logical cores",
        f"torch {torch.__version__}: vector capability {torch.backends.cpu.get_cpu_capability()}, "
        f"BLAS {blas}, MKL {torch.backends.mkl.is_available()}, oneDNN {torch.backends.mkldnn.is_available()}, "
        f"{torch.get_num_threads()} threads",
    ]
