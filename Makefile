# pvdetect: two-command set-up. `make demo` and `make test` create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo_out

WEB := src/pvdetect/serve/web
VENDOR := src/pvdetect/serve/static/vendor
WEB_STAMP := $(VENDOR)/.installed

.PHONY: demo test bench lint venv web clean

# the install step: the Python package and the web page's third-party files
venv: $(STAMP) $(WEB_STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# `pvdetect serve`'s page: Leaflet and Swagger UI, installed by npm at the versions of the
# lock file and copied into a git-ignored folder (no third-party code in git, no CDN at run time)
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm (Node.js) is needed to install Leaflet for 'pvdetect serve'"; exit 1; }
	cd $(WEB) && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(VENDOR)
	mkdir -p $(VENDOR)/leaflet $(VENDOR)/swagger-ui
	cp -R $(WEB)/node_modules/leaflet/dist/leaflet.js $(WEB)/node_modules/leaflet/dist/leaflet.css \
		$(WEB)/node_modules/leaflet/dist/images $(WEB)/node_modules/leaflet/LICENSE $(VENDOR)/leaflet/
	cp $(WEB)/node_modules/swagger-ui-dist/swagger-ui-bundle.js \
		$(WEB)/node_modules/swagger-ui-dist/swagger-ui.css \
		$(WEB)/node_modules/swagger-ui-dist/LICENSE $(VENDOR)/swagger-ui/
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

demo: venv
	$(BIN)/python scripts/demo.py --out $(DEMO)

test: venv
	$(BIN)/python -m pytest -q

# Benchmarks run in their own venv: it also holds TorchGeo, which pvdetect never depends on.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml constraints.txt benchmarks/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -c constraints.txt -e . -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(DEMO) bench_out .pytest_cache .ruff_cache $(VENDOR) $(WEB)/node_modules
