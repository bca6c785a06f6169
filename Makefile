# Quantum Trader — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SYMBOLS ?= BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT
DATA   ?= data/sample
REPORT ?= reports/replay.json
START  ?= 2025-10-10T00:00:00Z   # the last three weeks of the sample; START= replays it all

.PHONY: install run test test-systemd bench lint generate clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/ensure-redis-binary.sh
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel; a looser spec pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ml,rl]'
	scripts/ensure-redis-binary.sh $(PY)
	@touch $(STAMP)

## Replay the bundled real market data through the whole fleet (paper exchange) and report.
run: install
	$(VENV)/bin/quantumctl replay --data $(DATA) --symbols $(SYMBOLS) --report $(REPORT) \
		$(if $(strip $(START)),--start $(strip $(START)))

test: install
	$(VENV)/bin/pytest -q

## The fleet under a real systemd: a booted bookworm container (root, systemd-nspawn,
## mmdebstrap; tests/systemd/test_fleet_under_systemd.py). QT_TEST_SYSTEMD_LIVE_SECONDS=600
## watches the live publisher with no route for the full ten minutes.
test-systemd: install
	@command -v systemd-nspawn >/dev/null && command -v mmdebstrap >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		  { apt-get update -q >/dev/null; apt-get install -y -q systemd-container mmdebstrap >/dev/null; }; } || true
	QT_TEST_SYSTEMD=1 $(VENV)/bin/pytest -q -s tests/systemd

bench: install
	$(PY) -m bench

lint: install
	$(VENV)/bin/ruff check libs services tests bench
	$(VENV)/bin/mypy libs/quantum

## Rewrite the files generated from the fleet registry (units, env examples, docs).
generate: install
	$(PY) -m quantum.registry.generate
	$(PY) -m quantum.dashboard.provisioning

clean:
	rm -rf $(VENV) reports var .pytest_cache .ruff_cache .mypy_cache
