# Two entry points: `make demo` and `make test`. Each sets up its own virtualenv
# (.venv, Python 3.11) from pyproject.toml with the exact versions in constraints.txt.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest exits 5 when it collected no tests; treat that as a failure, never a pass.
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean venv

# The report's browser test (tests/analyze/test_report_browser.py) drives Debian's
# chromium; install it when missing (as root, with apt-get), else say how and fail.
CHROMIUM ?= /usr/bin/chromium

.PHONY: chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || exit 1; \
		else \
			echo "$(CHROMIUM) is missing: install Debian's chromium (as root: apt-get install -y chromium)" >&2; \
			exit 1; \
		fi; \
	fi

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null \
		|| { echo "need Python 3.11 on PATH (python3.11 or python3)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,spark]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/cartfhir demo --config config.yaml

test: $(STAMP) chromium
	$(BIN)/ruff check cartfhir tests bench examples
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check cartfhir tests bench examples
	$(BIN)/ruff format --check cartfhir tests bench examples

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,bench]"
	$(BIN)/python bench/land_ndjson.py
	$(BIN)/python bench/extract_hapi.py
	$(BIN)/python bench/transform.py
	$(BIN)/python bench/end_to_end.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/analyze.py
	$(BIN)/python bench/spark.py

clean:
	rm -rf $(VENV) out data bench/out .pytest_cache .ruff_cache servers/hapi/target

# ---- local HAPI FHIR JPA server (servers/hapi): needs Java 17+ and Maven, not the venv.
# `make hapi` builds the jar when its sources changed, then serves FHIR R4 at
# http://127.0.0.1:$(HAPI_PORT)/fhir (in-memory H2) in the foreground until Ctrl-C.
HAPI_PORT      ?= 8080
HAPI_JAR       := servers/hapi/target/cartfhir-hapi.jar
HAPI_SOURCES   := servers/hapi/pom.xml $(shell find servers/hapi/src -type f 2>/dev/null)
HAPI_JAVA_OPTS ?= -Xmx1g -XX:+UseSerialGC

.PHONY: hapi hapi-build

$(HAPI_JAR): $(HAPI_SOURCES)
	mvn -q -B -f servers/hapi/pom.xml package -DskipTests
	@touch $@

hapi-build: $(HAPI_JAR)

hapi: $(HAPI_JAR)
	exec java $(HAPI_JAVA_OPTS) -jar $(HAPI_JAR) --hapi.port=$(HAPI_PORT)
