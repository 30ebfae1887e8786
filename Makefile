# Entry points named in README.md. Everything runs in ./.venv, created and
# filled on first use (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Re-install when setup.py or this file changes.
STAMP := $(VENV)/.installed-$(shell cat setup.py Makefile | cksum | cut -d' ' -f1)
DEV_STAMP := $(STAMP)-dev

DEMO_DIR ?= demo_out
DEMO_IMPRESSIONS ?= 1000000
DEMO_FLAGS ?= --flagfile=experiments/esmm.flags
# The paper's experiments at scale (issue 16): ~5.25M train impressions with
# ~10k conversions, the test split alike; Table 2 over SCALE_RUNS seeds, an
# embedding-dimension sweep (BASE and ESMM, 3 seeds), Figure 2 for the paper's
# seven models (3 seeds; each rate the steps of one epoch at most, early stopped
# on a validation split held out of train, best checkpoint tested). Many hours
# on 2 cores.
# Resumable: each stage is skipped when its output is complete, each finished
# run is reused, from its run directory or from SCALE_ARCHIVE (committed: every
# finished run's numbers with the data's id, so a fresh machine that regenerates
# the same data resumes where the last one stopped).
SCALE_DIR ?= runs/scale
SCALE_ARCHIVE ?= experiments/results/scale/runs
SCALE_IMPRESSIONS ?= 10500000
SCALE_RUNS ?= 5

.PHONY: demo test test-fast lint format clean install install-dev bench bench-convert bench-train \
	bench-serving bench-order bench-full experiments-scale

# (tensorflow-cpu: left in a .venv from before setup.py pinned `tensorflow`;
# the two wheels write the same files.)
$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip uninstall -q -y tensorflow-cpu 2>/dev/null || true
	$(PY) -m pip install -q -e .
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

# The main job on the embedded default: synthetic Ali-CCP logs -> TFRecords ->
# train ESMM -> evaluate -> SavedModel in $(DEMO_DIR)/export. A re-run reuses
# the data, the finished run and the export made from its last checkpoint.
demo: $(STAMP)
	test -f $(DEMO_DIR)/raw/synthetic_config.json || $(PY) -m data_prep.synthetic \
		--out_dir=$(DEMO_DIR)/raw --impressions=$(DEMO_IMPRESSIONS) --seed=0
	test -f $(DEMO_DIR)/data/stats.json || $(PY) -m data_prep.convert \
		--raw_dir=$(DEMO_DIR)/raw --out_dir=$(DEMO_DIR)/data
	$(PY) -m esmm_tf.train $(DEMO_FLAGS) --data_dir=$(DEMO_DIR)/data --model_dir=$(DEMO_DIR)/run
	$(PY) -m esmm_tf.evaluate --model_dir=$(DEMO_DIR)/run --output_json=$(DEMO_DIR)/results.json
	$(PY) -m esmm_tf.export --model_dir=$(DEMO_DIR)/run --export_dir=$(DEMO_DIR)/export

experiments-scale: $(STAMP)
	test -f $(SCALE_DIR)/raw/synthetic_config.json || $(PY) -m data_prep.synthetic \
		--out_dir=$(SCALE_DIR)/raw --impressions=$(SCALE_IMPRESSIONS) --seed=16
	test -f $(SCALE_DIR)/data/stats.json || $(PY) -m data_prep.convert \
		--raw_dir=$(SCALE_DIR)/raw --out_dir=$(SCALE_DIR)/data
	$(PY) -m experiments.table2 --data_dir=$(SCALE_DIR)/data --runs=$(SCALE_RUNS) \
		--out_dir=$(SCALE_DIR)/results --archive_dir=$(SCALE_ARCHIVE)/main --prune
	for dim in 8 32 64; do $(PY) -m experiments.table2 --data_dir=$(SCALE_DIR)/data --runs=3 \
		--models=base,esmm --extra_flags=--embedding_dim=$$dim \
		--out_dir=$(SCALE_DIR)/results-dim$$dim --archive_dir=$(SCALE_ARCHIVE)/dim$$dim --prune \
		|| exit 1; done
	$(PY) -m experiments.figure2 --data_dir=$(SCALE_DIR)/data --runs=3 --early_stopping \
		--models=esmm,esmm_ns,base,aman,oversampling,unbias,division --out_dir=$(SCALE_DIR)/results \
		--archive_dir=$(SCALE_ARCHIVE)/main --prune
	$(PY) -m experiments.questions --results=$(SCALE_DIR)/results \
		--dim_results=8:$(SCALE_DIR)/results-dim8,32:$(SCALE_DIR)/results-dim32,64:$(SCALE_DIR)/results-dim64

# Test files run on TEST_WORKERS processes (pytest-xdist; a file's tests stay
# on one worker, so its module fixtures are built once). TEST_WORKERS=0: one
# process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PYTEST)

# The edit-test loop: every test but the long end-to-end ones (marked slow:
# subprocess trainings, kill -9, multi-worker, Beam, TFDS builds, README
# serving blocks, experiments).
test-fast: $(DEV_STAMP)
	$(PYTEST) -m "not slow"

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Converter throughput and peak memory on 2M and 10M synthetic impressions
# (~15 minutes; raw logs kept in /tmp/esmm_convert_bench).
bench-convert: $(STAMP)
	$(PY) -m benchmarks.convert_bench

# Input pipeline, train step vs a matmul ceiling, 100k vs 10M embedding rows,
# evaluation, peak RSS, on the 2M-impression dataset above (~3 minutes).
bench-train: $(STAMP)
	$(PY) -m benchmarks.train_bench

# Latency of the exported SavedModel's signatures at batch 1/64/1024, rank vs
# serving_default (~1 minute; converts 200k synthetic impressions on first use).
bench-serving: $(STAMP)
	$(PY) -m benchmarks.serving_bench

# The same logs in file order and with requests interleaved (rows shuffled):
# converter and training throughput ratios and AUCs (~10 minutes).
bench-order: $(STAMP)
	$(PY) -m benchmarks.order_bench

# The public set's size end to end (hours, tens of GB): prints the plan;
# FULL_FLAGS=--yes runs it.
bench-full: $(STAMP)
	$(PY) -m benchmarks.full_bench $(FULL_FLAGS)

bench: $(STAMP)
	$(PY) -m benchmarks.order_bench
	$(PY) -m benchmarks.convert_bench
	$(PY) -m benchmarks.train_bench
	$(PY) -m benchmarks.serving_bench --data_dir=/tmp/esmm_convert_bench/data-2000000

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache *.egg-info
