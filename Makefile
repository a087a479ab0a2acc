# hitrun developer commands. The quick start needs only `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit lint chaos bench bench-core bench-scale bench-lateness bench-replay bench-risk bench-links bench-startup bench-broker kafka kafka-start kafka-stop promtool tmux faketime clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "hitrun needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

## demo: local broker + worker + simulated traffic, live counters; Ctrl-C stops all
demo: $(STAMP) kafka
	$(PY) -m hitrun.dev.demo

## test: the whole suite, integration tests included, against a real local broker
test: $(STAMP) kafka promtool tmux faketime
	$(PY) -m pytest

# The operations tests need promtool and a Prometheus server: Debian's package.
promtool:
	@command -v promtool >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; \
		else echo "install Debian's prometheus package (promtool) for the operations tests"; exit 1; fi; }

# The demo's test looks at it in a terminal: tmux, Debian's package.
tmux:
	@command -v tmux >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux; \
		else echo "install tmux for the demo's test"; exit 1; fi; }

# A worker whose system clock is wrong runs under libfaketime in a test: Debian's package.
faketime:
	@ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime; \
		else echo "install Debian's libfaketime for the worker clock test"; exit 1; fi; }

unit: $(STAMP)
	$(PY) -m pytest tests/unit

## chaos: long chaos run: workers killed or stalled at random and the broker stopped, compared with a clean run
chaos: $(STAMP) kafka
	$(PY) -m hitrun.dev.chaos --long $(CHAOS_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## bench: plain aiokafka consumer vs the hitrun worker on the same events
bench: $(STAMP) kafka
	$(PY) -m bench.throughput $(BENCH_ARGS)

bench-lateness: $(STAMP) kafka
	$(PY) -m bench.timer_lateness

## bench-core: hitrun's own work per event without Kafka, against BASE (default HEAD) in the same run
BASE ?= HEAD
bench-core: $(STAMP)
	$(PY) -m bench.core --compare-with $(BASE) --profile $(BENCH_ARGS)

## bench-scale: a worker on top of state for a million customers: start, restart, events/s, rebalance, memory
bench-scale: $(STAMP) kafka
	$(PY) -m bench.scale $(BENCH_ARGS)

## bench-replay: `hitrun replay` of 100,000 transactions end to end (one worker per core) vs two baselines
bench-replay: $(STAMP) kafka
	$(PY) -m bench.replay $(BENCH_ARGS)

## bench-startup: workers started together, time to ready and to stop, against BASE (default HEAD) in the same run
bench-startup: $(STAMP) kafka
	$(PY) -m bench.startup --compare-with $(BASE) $(BENCH_ARGS)

## bench-broker: fresh local brokers with their JVM defaults vs full tiered JIT, replays against each, same run
bench-broker: $(STAMP)
	$(PY) -m bench.broker $(BENCH_ARGS)

## bench-links: linked accounts on simulated evaders through two live workers: precision, recall, innocents flagged
bench-links: $(STAMP) kafka
	$(PY) -m bench.links $(BENCH_ARGS)

## bench-risk: how well the first-purchase risk score separates one-time from repeat buyers
bench-risk: $(STAMP)
	$(PY) -m bench.risk_auc

## kafka: fetch the pinned Apache Kafka jars into the user cache (once)

kafka: $(STAMP)
	$(PY) -m hitrun.dev.localkafka fetch

kafka-start: kafka
	$(PY) -m hitrun.dev.localkafka start --data-dir .hitrun/kafka --port 9092

kafka-stop: $(STAMP)
	$(PY) -m hitrun.dev.localkafka stop --data-dir .hitrun/kafka

clean:
	rm -rf .hitrun .pytest_cache .mypy_cache .ruff_cache
