# Every target bootstraps .venv when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test chaos eval bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/supply-agent demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The whole fault-injection suite: every crash point and fault, and three replicas killed, frozen and
# restarted under a storm (make test runs the essential ones).
chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m chaos tests/e2e/test_faults.py tests/e2e/test_faults_kill.py tests/e2e/test_chaos_replicas.py
	$(BIN)/python -m pytest -q tests/e2e/test_faults.py tests/e2e/test_faults_kill.py

# The whole incident corpus, gated, with the --no-gate ablation and (gang incidents) the --node-only one
# (report in evals/report/), then the
# holdout written from public sources before the agent was changed for it (report in evals/report/holdout/).
eval: $(STAMP)
	$(BIN)/supply-agent eval evals/incidents --jobs 2 --no-gate --node-only --report evals/report
	$(BIN)/supply-agent eval evals/holdout --jobs 2 --report evals/report/holdout

bench: $(STAMP)
	$(BIN)/python benchmarks/sandbox_scale.py
	$(BIN)/python benchmarks/gate.py
	$(BIN)/python benchmarks/history_reads.py
	$(BIN)/python benchmarks/incident_latency.py
	$(BIN)/python benchmarks/incident_latency.py --nodes 24,1000,10000 --runs 3 --cache
	$(BIN)/python benchmarks/incident_latency.py --process --nodes 24,1000,10000 --runs 3
	$(BIN)/python benchmarks/incident_latency.py --nodes 10000 --concurrent 10,50
	$(BIN)/python benchmarks/world_cache.py
	$(BIN)/python benchmarks/intake_storm.py
	$(BIN)/python benchmarks/console.py
	$(BIN)/python benchmarks/mcp_gate.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
