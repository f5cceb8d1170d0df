# slotproxy: the two commands that must work on a fresh Debian machine are
# `make demo` and `make test`.

SWIFT ?= swift
PYTHON ?= python3
DEMO_DIR ?= run/demo

.PHONY: deps build-deps binary build release test unit integration fuzz test-sanitize chaos demo bench callgrind install clean

deps:
	PYTHON=$(PYTHON) scripts/install-deps

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product slotproxy

# The release binary with only its build dependencies (no Redis, no test
# packages): what `make install` builds on a production host.
build-deps:
	scripts/install-deps --build

binary: build-deps
	$(SWIFT) build -c release --product slotproxy

# Unit tests (pure modules, config) then the integration suite against a real
# 6-node cluster started and stopped by the harness.
test: build release
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	$(PYTHON) -m pytest -q Tests/integration
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz

# libFuzzer on the request parser and reply scanner; `make test` runs it for
# 20 s, `make fuzz FUZZ_SECONDS=3600` for a long run.
FUZZ_SECONDS ?= 20
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz

# The integration suite against a proxy built with a sanitizer:
# SANITIZER=address (default) or thread. Slow; not part of `make test`.
# PYTEST_ARGS picks tests: `make test-sanitize SANITIZER=thread
# PYTEST_ARGS=Tests/integration/test_admin.py`; SLOTPROXY_TEST_WORKERS=4 runs
# every proxy with 4 workers.
SANITIZER ?= address
PYTEST_ARGS ?= Tests/integration
test-sanitize: deps
	$(SWIFT) build --product slotproxy --build-path .build/sanitize-$(SANITIZER) -Xswiftc -sanitize=$(SANITIZER)
	SLOTPROXY_BIN=.build/sanitize-$(SANITIZER)/debug/slotproxy SLOTPROXY_SANITIZER=$(SANITIZER) \
		$(PYTHON) -m pytest -q $(PYTEST_ARGS)

unit: build
	$(SWIFT) test

integration: build
	$(PYTHON) -m pytest -q Tests/integration

# A local cluster (3 masters + 3 replicas on loopback) and slotproxy on
# 127.0.0.1:7777 in the foreground; Ctrl-C stops both.
demo: release
	scripts/demo $(DEMO_DIR)

# Mixed traffic through the proxy while masters are killed, failed over,
# paused, slots migrated and the proxy reloaded; then a check that nothing
# acknowledged was lost or doubled. CHAOS_MINUTES=30 for a long soak.
CHAOS_MINUTES ?= 5
chaos: build
	$(PYTHON) scripts/chaos --minutes $(CHAOS_MINUTES)

bench: release
	PYTHON=$(PYTHON) scripts/install-deps --bench
	scripts/bench markdown

callgrind: release
	PYTHON=$(PYTHON) scripts/install-deps --bench
	scripts/bench callgrind

# Where a package would put things: the binary, the systemd units (with the
# binary's path as installed) and the example config, which an existing one
# is never overwritten by. `make install PREFIX=/usr DESTDIR=pkgroot` for packaging.
# Only the build dependencies are installed (`make binary`): on a production
# host, `make binary` as yourself, then `sudo make install`.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
install: binary
	install -D -m 755 .build/release/slotproxy $(DESTDIR)$(PREFIX)/bin/slotproxy
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/slotproxy|$(PREFIX)/bin/slotproxy|g' -e 's|/etc/slotproxy/|$(SYSCONFDIR)/slotproxy/|g' \
		systemd/slotproxy.service > $(DESTDIR)$(UNITDIR)/slotproxy.service
	install -m 644 systemd/slotproxy.socket $(DESTDIR)$(UNITDIR)/slotproxy.socket
	chmod 644 $(DESTDIR)$(UNITDIR)/slotproxy.service
	install -d $(DESTDIR)$(SYSCONFDIR)/slotproxy
	[ -e $(DESTDIR)$(SYSCONFDIR)/slotproxy/slotproxy.yaml ] || \
		install -m 644 config/slotproxy.yaml $(DESTDIR)$(SYSCONFDIR)/slotproxy/slotproxy.yaml

clean:
	rm -rf .build run
