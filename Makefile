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

.PHONY: setup setup-serve serve worker test reliability lint data train finetune finetune3 finetune4 finetune5 finetune6 finetune7 judge evaluate export clean bench

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

lint: setup
	$(VENV)/bin/ruff check .

data: setup
	$(PY) -m model.data build sprites --preview docs/sprites-preview.png

train: setup
	$(PY) -m model.train --out runs/sprites   # defaults: the shipped model's run (100 min)

# The shipped model's second stage: a fine-tune of CHECKPOINT with a fresh schedule (108 min).
finetune: setup
	$(PY) -m model.train --init-from $(CHECKPOINT) --out runs/tuned --lr 4e-4 --max-minutes 108

# Its third stage: a second fine-tune, of the second stage's model (100 min).
finetune3: setup
	$(PY) -m model.train --init-from $(CHECKPOINT) --out runs/tuned3 --lr 3e-4 --max-minutes 100 --seed 3

# Its fourth stage: the third stage's model with its palette widened from 16 to 32 colours (120 min).
finetune4: setup
	$(PY) -m model.train --init-from $(CHECKPOINT) --palette 32 --out runs/tuned4 --lr 3e-4 --max-minutes 120 --seed 4

# Its fifth stage: the fourth stage's model with its palette widened from 32 to 48 colours (115 min).
finetune5: setup
	$(PY) -m model.train --init-from $(CHECKPOINT) --palette 48 --out runs/tuned5 --lr 3e-4 --max-minutes 115 --seed 5

# Its sixth stage: the fifth stage's model at a lower peak rate, with its appearance codes held
# to the prior's mean and variance (the prior-moments term; 95 min).
finetune6: setup
	$(PY) -m model.train --init-from $(CHECKPOINT) --out runs/tuned6 --lr 1e-4 --prior-moments 10 --max-minutes 95 --seed 6

# Its seventh stage: the sixth stage's model with a Gaussian fit of its appearance codes over
# the last 1024 clips held to N(0, I), covariance included (the aggregate-prior term; 88 min).
finetune7: setup
	$(PY) -m model.train --init-from $(CHECKPOINT) --out runs/tuned7 --lr 1e-4 --aggregate-prior 10 --max-minutes 88 --seed 7

clean:
	rm -rf $(VENV) .cache runs

# After `make train`: judge, evaluation, export of the shipped model, parity check.
CHECKPOINT ?= runs/sprites/model.safetensors
JUDGE ?= models/judge/sprites-judge.safetensors
judge: setup
	$(PY) -m model.evaluate train-judge --out $(JUDGE) --epochs 8

evaluate: setup
	$(PY) -m model.evaluate run --model $(CHECKPOINT) --judge $(JUDGE) --out docs/evaluation

export: setup
	$(PY) -m export $(CHECKPOINT) models/sprites --metrics docs/evaluation/results.json
	$(PY) -m export verify models/sprites $(CHECKPOINT) --judge $(JUDGE)

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
