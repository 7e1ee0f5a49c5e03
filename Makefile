# fluxrig-ts. `make run-rack` and `make test` are the two commands a newcomer needs; each
# installs what it depends on.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NODE_BIN := node_modules/.bin
DEPS_STAMP := node_modules/.fluxrig-deps
BENCHES := $(patsubst bench/%.ts,%,$(wildcard bench/*.ts))
TEST_TIMEOUT_MS ?= 120000

.PHONY: help deps nats-server build test bench clean $(addprefix bench-,$(BENCHES))

help:
	@echo "make test        install, build and run every test suite"
	@echo "make bench       run every benchmark ($(BENCHES)); make bench-NAME runs one"
	@echo "make build       compile TypeScript into dist/"
	@echo "make deps        npm ci from the lockfile, and nats-server"

deps: $(DEPS_STAMP) nats-server

# npm ci only when the lockfile changed since the last install.
$(DEPS_STAMP): package-lock.json package.json
	npm ci --no-audit --no-fund
	@touch $@

# Debian installs nats-server in /usr/sbin, which is not on every user's PATH.
nats-server:
	@if command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's nats-server package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null; \
	else \
		echo "fluxrig needs nats-server on PATH: install it with 'sudo apt-get install nats-server' (or a release from the NATS project)" >&2; \
		exit 1; \
	fi

build: $(DEPS_STAMP)
	$(NODE_BIN)/tsc -p tsconfig.json

test: deps build
	node --test --test-reporter=spec --test-timeout=$(TEST_TIMEOUT_MS) $$(find dist/test -name '*.test.js' | sort)

bench: $(addprefix bench-,$(BENCHES))

$(addprefix bench-,$(BENCHES)): bench-%: deps build
	@mkdir -p bench/results
	node dist/bench/$*.js

clean:
	rm -rf dist
