# slotproxy: the two commands that must work on a fresh Debian machine are
# `make demo` and `make test`.

SWIFT ?= swift
PYTHON ?= python3
DEMO_DIR ?= run/demo

.PHONY: deps build release test unit integration demo bench callgrind clean

deps:
	scripts/install-deps

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product slotproxy

# Unit tests (pure modules, config) then the integration suite against a real
# 6-node cluster started and stopped by the harness.
test: build
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	$(PYTHON) -m pytest -q Tests/integration

unit: build
	$(SWIFT) test

integration: build
	$(PYTHON) -m pytest -q Tests/integration

# A local cluster (3 masters + 3 replicas on loopback) and slotproxy on
# 127.0.0.1:7777 in the foreground; Ctrl-C stops both.
demo: release
	scripts/demo $(DEMO_DIR)

bench: release
	scripts/bench
	scripts/bench replicas

callgrind: release
	scripts/bench callgrind

clean:
	rm -rf .build run
