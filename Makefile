# Two commands do all the set-up on a fresh machine:
#   make run    install into .venv, then run the demo (simulator + embedded Tiled + bp.count +
#               a picture + the doctor)
#   make test   install into .venv (and PostgreSQL and Redis, for the deployment and
#               queueserver tests), then lint and
#               run the test suite
# make sim starts the simulated EIGER2 IOC alone, for your own client
#   (make sim PREFIX=XYZ: PORT=5070 PVA_PORT=5077 DATA_ROOT=/some/dir for other ones).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA_ROOT ?= /tmp/id3c-eiger-data
PREFIX ?= 3idcEIG2:
PORT ?= 5064
PVA_PORT ?= 5076

.PHONY: run sim test install benchmark clean postgresql redis

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/id3c-eiger demo

sim: $(STAMP)
	mkdir -p $(DATA_ROOT)
	$(BIN)/id3c-eiger-sim --data-root $(DATA_ROOT) --prefix '$(PREFIX)' --port $(PORT) \
		--pva-port $(PVA_PORT)

test: $(STAMP) postgresql redis
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The deployment tests run a real PostgreSQL server (Debian's package), started by the suite.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y --no-install-recommends postgresql

benchmark: $(STAMP) postgresql
	$(BIN)/python benchmarks/bench_channel_access.py
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_classic_device.py
	$(BIN)/python benchmarks/bench_async_device.py
	$(BIN)/python benchmarks/bench_tiled_frame_read.py
	$(BIN)/python benchmarks/bench_tiled_requests.py
	$(BIN)/python benchmarks/bench_reliability.py
	$(BIN)/python benchmarks/bench_file_writer.py
	$(BIN)/python benchmarks/bench_cli.py
	$(BIN)/python benchmarks/bench_deployment.py
	$(BIN)/python -m pytest -m soak -q

clean:
	rm -rf $(VENV)

# The queueserver test runs a real Redis (Debian's package), started by the test itself.
redis:
	@command -v redis-server >/dev/null 2>&1 || \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y --no-install-recommends redis-server
