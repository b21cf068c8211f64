# Two entry points: `make demo` runs the default sweep, `make test` runs the tests.
# Both create .venv on first use with torch/torchvision pinned as a pair.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS := --isolated --disable-pip-version-check --default-timeout 180

.PHONY: demo test test-all venv bench clean browser sshd check wheels

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -q --upgrade pip
	$(BIN)/pip install $(PIP_FLAGS) -q -c constraints.txt -e '.[dev]'
	@$(BIN)/python -c "from importlib.metadata import version as v; print('[cxrray] .venv ready:', ', '.join(f'{p} {v(p)}' for p in ('cxrray', 'torch', 'torchvision', 'ray', 'wandb')))"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python sweeps/hide_seek.py $(ARGS)

# `make test` (CI) lints (ruff), type-checks (mypy over the whole package, strict where pyproject.toml says) and
# leaves out the tests marked slow (the longest end-to-end sweeps); `make test-all` runs all.
test: $(STAMP) browser sshd check
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) browser sshd check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff check cxrray sweeps bench tests
	$(BIN)/mypy

# Debian's chromium renders report.html in one test; installed when apt-get can (best effort, else skipped).
browser:
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
		timeout 600 apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
		(timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq --no-install-recommends chromium) \
		>/dev/null 2>&1 || \
		echo "chromium not installed: the report rendering test will be skipped"

# Debian's openssh-server and rsync: the cluster-launcher test runs `ray up` against sshd on 127.0.0.1 (as root).
sshd:
	@{ test -x /usr/sbin/sshd && command -v rsync >/dev/null; } || ! command -v apt-get >/dev/null || \
		timeout 600 apt-get install -y -qq --no-install-recommends openssh-server rsync >/dev/null 2>&1 || \
		(timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq --no-install-recommends \
		openssh-server rsync) >/dev/null 2>&1 || \
		echo "openssh-server or rsync not installed: the cluster-launcher test will fail"

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# The packages the lent GPU machine lacks (its image has torch, timm, pyarrow, scikit-learn, ...), as Python 3.12
# wheels in .whl/ (git-ignored) for `sh bench/device.sh` there; bench/README.md says how to run it.
# polars 1.33: polars 2's runtime wheel (54 MB) and the working tree would pass the 64 MiB a call may carry.
WHEELS := polars==1.33.1 kornia==0.9.0 kornia_rs==0.2.0 ttach==0.0.3 pydicom==3.0.2 \
	xxhash==4.1.0
PURE := grad-cam==1.5.7  # published as a source archive only: built here into a wheel (pure Python)
wheels: $(STAMP)
	$(BIN)/pip download $(PIP_FLAGS) -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(WHEELS)
	$(BIN)/pip wheel $(PIP_FLAGS) -q --no-deps -w .whl $(PURE)
	@du -sh .whl

clean:
	rm -rf $(VENV) runs
