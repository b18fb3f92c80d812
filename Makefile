# Every target runs in the project's own venv, created or refreshed from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= gallery.toml
JOBS   ?= 2
STAMP  := $(VENV)/.installed

.PHONY: venv site site-zip test serve clean clean-cache train-demo bench bench-quick bench-smoke figures verify

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,hf]'
	touch $@

site: $(STAMP)
	$(PY) -m generator build --config $(CONFIG) --jobs $(JOBS)

# One deterministic zip of the built site (opens from disk: unzip, open site/index.html).
SITE_DIR ?= site
SITE_ZIP ?= build/site.zip
site-zip: site
	$(PY) -m generator.site.zip $(SITE_DIR) $(SITE_ZIP)

# One test process per core; whole files per process (a module's built gallery is built once), in
# collection order (conftest puts the slowest files first).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

serve: site
	$(PY) -m http.server --directory site 8000

train-demo: $(STAMP)
	$(PY) -m generator train-demo --model all --seed 0

figures: $(STAMP)
	$(PY) -m generator figures --config $(CONFIG) --dpi $(or $(DPI),300) --out figures-export $(if $(ZIP),--zip figures-export/figures.zip,)

bench: $(STAMP)
	$(PY) -m generator.devtools.bench $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),) $(if $(REPEATS),--repeats $(REPEATS),)

bench-quick: $(STAMP)
	$(PY) -m generator.devtools.bench --quick

# Every group on the smallest work: checks that the bench runs (what the tests run; not measurements).
bench-smoke: $(STAMP)
	$(PY) -m generator.devtools.bench --smoke --out bench/smoke-results.json

# Check the built gallery against its manifest and recompute a sample of its numbers.
verify: $(STAMP)
	$(PY) -m generator verify build $(if $(ALL),--all,)

clean-cache: $(STAMP)
	$(PY) -m generator clean-cache --config $(CONFIG)

clean:
	rm -rf build site .pytest_cache tests/artifacts
