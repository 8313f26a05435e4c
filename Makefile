# dgmcourse: one entry point. `make lab` opens the course, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# make lab HOST=0.0.0.0 PORT=8890 NO_BROWSER=1 LAB_ARGS="--ServerApp.token=..."
# make lab ROLE=instructor adds the formgrader and the other instructor tools (jupyter/README.md)
ROLE ?= student
HOST ?= localhost
PORT ?= 8888
NO_BROWSER ?=
LAB_ARGS ?=
# make test PYTEST_ARGS="-k vae"; make test TIER=grading runs one tier (unit, notebooks, grading,
# assessment, browser, site: pyproject.toml); make test-quick is make test TIER=unit
PYTEST_ARGS ?=
TIER ?=
TIERS := notebooks grading assessment browser site
TIER_EXPR = $(if $(filter unit,$(TIER)),not ($(subst $(space), or ,$(strip $(TIERS)))),$(TIER))
space := $(subst ,, )
# make site SMOKE=1: the website in smoke mode (what the browser tests read); SITE_ARGS="..." to sphinx-build
SMOKE ?=
SITE_ARGS ?=
# lectures executed at a time (the tests build with SITE_JOBS=1: the other xdist worker has the other core)
SITE_JOBS ?= auto
SITE := _build/$(if $(SMOKE),site-smoke,site)
# make autograde ASSIGNMENT=a1_vae GRADE_ARGS="--jobs 2"
ASSIGNMENT ?= a1_vae
GRADE_ARGS ?=

# nbgrader runs helper programs (alembic) by name: the venv's bin/ must be on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv lock lab test test-quick site release exchange autograde benchmarks clean

venv: $(STAMP)

# Idempotent: re-runs only when the pins (requirements.txt), their lock or the package metadata change.
# requirements.lock pins every package, dependencies included, each with its hashes (`make lock` writes it);
# the course package itself is installed editable, without dependencies.
$(STAMP): requirements.txt requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# uv, pinned, for `make lock`: installed beside the course packages (pip --target), not among them.
UV_VERSION := 0.13.9
UV := $(VENV)/uv-$(UV_VERSION)/bin/uv
$(UV):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --target $(VENV)/uv-$(UV_VERSION) uv==$(UV_VERSION)

# Re-resolve requirements.lock after a pin in requirements.txt changes (the versions already locked are kept
# where they still fit; see CONTRIBUTING.md). The lock's header names this command (tests/test_environment.py).
lock: $(UV)
	$(UV) pip compile requirements.txt --universal --generate-hashes --python-version 3.11 -o requirements.lock

lab: $(STAMP)
	$(if $(filter instructor,$(ROLE)),,JUPYTER_CONFIG_PATH=$(CURDIR)/jupyter/student) \
	$(BIN)/jupyter lab --ip=$(HOST) --port=$(PORT) $(if $(NO_BROWSER),--no-browser,) \
		$(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

test: $(STAMP)
	@$(if $(filter-out unit $(TIERS),$(TIER)),echo "TIER must be one of: unit $(TIERS) (got '$(TIER)')" >&2; exit 2,true)
	$(BIN)/python -m pytest $(if $(TIER),-m "$(TIER_EXPR)") $(PYTEST_ARGS)

# the unit tier only (no notebook, sandbox, server or browser): the inner loop, a few minutes
test-quick:
	@$(MAKE) --no-print-directory test TIER=unit

# The course website (docs/conf.py): lectures executed (full mode; SMOKE=1 for smoke mode) and cached in
# $(SITE)/.jupyter_cache/<digest of the library code they reach>, so a rebuild re-executes only changed lectures
# (all of them after a library change). Open $(SITE)/html/index.html.
# -j auto executes one lecture per core, each kernel on one thread (OMP_NUM_THREADS=1).
site: $(STAMP)
	OMP_NUM_THREADS=1 DGMCOURSE_SMOKE=$(SMOKE) $(BIN)/sphinx-build -b html -q -j $(SITE_JOBS) -c docs $(SITE_ARGS) . $(SITE)/html
	@echo "site: $(SITE)/html/index.html"

# Regenerate the student release assignments/<name>/ from every solutions/<name>/.
release: $(STAMP)
	for dir in solutions/*/; do $(BIN)/nbgrader generate_assignment "$$(basename $$dir)" --force || exit 1; done

# A local exchange under the course directory (exchange/, set in nbgrader_config.py), holding every
# assignment released: the Assignments tab of `make lab` can then fetch and submit on this machine.
exchange: release
	mkdir -p exchange && chmod 0777 exchange
	for dir in solutions/*/; do $(BIN)/nbgrader release_assignment "$$(basename $$dir)" --force || exit 1; done

autograde: $(STAMP)
	$(BIN)/dgmcourse grade $(ASSIGNMENT) $(GRADE_ARGS)

# every benchmark but cuda.py, which needs a CUDA GPU (run it there by hand)
benchmarks: $(STAMP)
	for script in $(filter-out benchmarks/cuda.py,$(wildcard benchmarks/*.py)); do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) _build submitted autograded feedback exchange gradebook.db .pytest_cache grading-logs
