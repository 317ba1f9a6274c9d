# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DATA ?= $(CURDIR)/demo_data
DEMO_WORKDIR ?= $(CURDIR)/workdirs/demo
# MOVi-A-like videos at 64x64 (the demo model resizes them to 32x32), 24 frames: about a minute on 2 cores.
# 2-5 larger, sliding objects on a floor whose gray level and tint vary per video (why: configs/demo.py).
DEMO_SYNTH_ARGS ?= --num_train 256 --num_validation 32 --resolution 64 --min_objects 2 --max_objects 5 --size_scale 1.5 --speed 1.3 --friction 0.5 --shadow_light 0.6 --floor_jitter 0.4 --floor_tint 0.4

.PHONY: install install-cuda demo test lint bench bench-tf clean

install: $(STAMP)

# Re-runs only when the dependency spec changes; the editable install picks up code edits by itself.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

# make install-cuda: the GPU environment (CUDA 12, NVIDIA driver >= 525.60.13): the same .venv with jax's CUDA
# plugin and NVIDIA's wheels, each pinned by constraints-cuda.txt. On a GPU node, or in launch/k8s/Dockerfile.
install-cuda: $(VENV)/.installed-cuda

$(VENV)/.installed-cuda: pyproject.toml constraints.txt constraints-cuda.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -c constraints-cuda.txt -e ".[cuda,test]"
	touch $(STAMP) $@

demo: install
	$(PY) -m data.synthetic --out_dir $(DEMO_DATA) $(DEMO_SYNTH_ARGS) --skip_existing
	rm -rf $(DEMO_WORKDIR)  # a fresh run each time (the trainer itself resumes from an existing workdir)
	$(PY) -m trainer.main --config configs/demo.py --config.data.data_dir=$(DEMO_DATA) --workdir $(DEMO_WORKDIR)

# Two pytest-xdist workers, whole modules each (tests/conftest.py: LONGEST_FIRST says in which order); TEST_WORKERS=0
# runs them in this process, one after another.
TEST_WORKERS ?= 2
test: install
	$(PY) -m ruff check .
	@# pytest exits 5 when it collects no test: that is a failure, not a pass.
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; exit $$rc

lint: install
	$(PY) -m ruff check .

# The whole suite, with the original's TensorFlow input path side by side with ours (TensorFlow lives in its
# own venv, .venv-tf, never in the project's). `python -m bench --quick` skips that comparison when .venv-tf
# is absent and says so.
bench: install .venv-tf/.installed
	$(PY) -m bench --json bench.json

bench-tf: install .venv-tf/.installed
	$(PY) -m bench --only data --tf_python .venv-tf/bin/python

.venv-tf/.installed: constraints-tf.txt
	test -x .venv-tf/bin/python || $(PYTHON) -m venv .venv-tf
	.venv-tf/bin/python -m pip install -q --disable-pip-version-check -r constraints-tf.txt
	touch $@

clean:
	rm -rf $(VENV) .venv-tf demo_data workdirs .pytest_cache
