# The two set-up commands of the README are `make serve ...` and `make test`; both install
# the locked environment (.venv) first. Everything runs through the pinned uv.
UV := ./scripts/uv.sh
PYTEST_ARGS ?=
MODEL ?= $(or $(PAGELENS_MODEL),ModernVBERT/colmodernvbert-merged)
IMAGE ?=
QUERY ?=
OUT ?= embeddings.npz

API_KEY ?= $(or $(PAGELENS_API_KEY),$(SERVICE_API_KEY))
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test lint serve embed demo bench bench-engine bench-http bench-priority bench-coldstart bench-wire bench-gpu

install:
	$(UV) sync --frozen

test: install
	$(UV) run --frozen ruff check src tests
	$(UV) run --frozen ruff format --check src tests
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: install
	$(UV) run --frozen ruff check --fix src tests
	$(UV) run --frozen ruff format src tests

# Without API_KEY (or PAGELENS_API_KEY / SERVICE_API_KEY) it serves with no key (--no-auth), warning in the log.
serve: install
	$(UV) run --frozen pagelens serve --model "$(MODEL)" --host "$(HOST)" --port "$(PORT)" \
		$(if $(API_KEY),--api-key "$(API_KEY)",--no-auth)

embed: install
	$(UV) run --frozen pagelens embed --model "$(MODEL)" $(if $(IMAGE),--image "$(IMAGE)") \
		$(if $(QUERY),--query "$(QUERY)") --out "$(OUT)"

demo: install
	$(UV) run --frozen pagelens demo

# Each bench prints its table, writes bench-results/NAME.json and refreshes its section of docs/benchmarks.md.
BENCH_ARGS ?=
# bench-search (10k pages: ~15 min to build the collection the first time) and bench-variants run on their own.
bench: bench-wire bench-coldstart bench-priority bench-engine bench-http

bench-engine bench-http bench-priority bench-coldstart bench-wire bench-search bench-variants: bench-%: install
	$(UV) run --frozen pagelens bench $* $(BENCH_ARGS)

# On a CUDA machine: bench engine + bench http at full depth (FlashAttention 2 when flash-attn is installed, bf16,
# batched pages, pinned memory), one table, about 3 minutes (budget 8); `BENCH_ARGS=--dry-run` checks it on the CPU.
bench-gpu: install
	$(UV) run --frozen pagelens bench gpu $(BENCH_ARGS)
