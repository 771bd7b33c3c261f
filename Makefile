# The README's commands. Everything a new user needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared
MODEL_MIRROR ?= $(SHARED)/models
# With no camera configured, `make run` processes this real face clip.
SOURCE ?= $(SHARED)/data/media/single_face.mp4
STAMP := $(VENV)/.installed

.PHONY: setup model run test bench clean soak

$(STAMP): pyproject.toml requirements/runtime.txt requirements/test.txt requirements/mediapipe.txt
	@bash provisioning/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	@bash provisioning/link-systemd.sh $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/runtime.txt -r requirements/test.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/mediapipe.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

setup: $(STAMP)

model: setup
	$(VENV)/bin/microexpr provision-model --mirror $(MODEL_MIRROR)
	$(VENV)/bin/microexpr provision-model --onnx

run: model
	$(VENV)/bin/microexpr run --source $(SOURCE)

# Two pytest workers, one test file each at a time (fixtures stay per file):
# most integration tests wait on a broker, a daemon or a clip played in real
# time, so a second process fills the core the first leaves idle.
TEST_WORKERS ?= 2

test: model
	@bash provisioning/system-deps.sh --test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: model
	$(VENV)/bin/microexpr bench --source $(SOURCE)

# Storage soak (issue 14): 10 min of replay:, broker SIGKILLed every minute,
# the outbox's disk filled once. Needs root (tmpfs) and mosquitto; not part of `make test`.
soak: model
	nice -n 10 $(PY) benchmarks/soak.py --minutes 10

clean:
	rm -rf $(VENV) .pytest_cache

# Offline release bundles, one per architecture (x86_64, aarch64), into dist/:
# wheels fetched by pip from the configured index with pip's platform tags, the
# pinned model and ONNX files, units, installer, sha256 manifest. Install one
# with provisioning/install.sh --bundle FILE (docs/deployment.md, "Bundles").
.PHONY: bundle
bundle: setup
	PYTHON=$(PY) bash provisioning/bundle.sh --out dist --mirror $(MODEL_MIRROR)
