# fluxrig-ts. `make run-rack` and `make test` are the two commands a newcomer needs; each
# installs what it depends on.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NODE_BIN := node_modules/.bin
DEPS_STAMP := node_modules/.fluxrig-deps
# The end-to-end benchmark runs last: it is the longest, and the one that can fail the budget.
BENCHES := $(filter-out e2e,$(patsubst bench/%.ts,%,$(wildcard bench/*.ts))) e2e
GEARS := $(patsubst wasm-gears/examples/%.ts,wasm-gears/build/%.wasm,$(wildcard wasm-gears/examples/*.ts))
GEAR_SDK := $(wildcard wasm-gears/sdk/*.ts)
# Gears in C and Rust (docs/writing-gears.md): NAME.c builds NAME-c.wasm, NAME.rs NAME-rust.wasm.
C_GEARS := $(patsubst wasm-gears/examples/%.c,wasm-gears/build/%-c.wasm,$(wildcard wasm-gears/examples/*.c))
RUST_GEARS := $(patsubst wasm-gears/examples/%.rs,wasm-gears/build/%-rust.wasm,$(wildcard wasm-gears/examples/*.rs))
TEST_GEARS := $(patsubst test/gears/%.ts,dist/test-gears/%.wasm,$(wildcard test/gears/*.ts)) \
	$(patsubst test/gears-c/%.c,dist/test-gears/%-c.wasm,$(wildcard test/gears-c/*.c)) \
	$(patsubst test/gears-rust/%.rs,dist/test-gears/%-rust.wasm,$(wildcard test/gears-rust/*.rs))
# Debian's clang with wasi-libc, and a rustc whose standard library has the wasm32-wasi target:
# Debian's (libstd-rust-dev-wasm32) where a rustup toolchain on PATH has none.
CLANG_WASI = clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Wall -Wextra -Werror -s -I wasm-gears/sdk-c
RUSTC_WASI = $(shell for r in /usr/bin/rustc $$(command -v rustc); do [ -d "$$($$r --print sysroot 2>/dev/null)/lib/rustlib/wasm32-wasi" ] && { echo $$r; break; }; done) \
	--edition 2021 --target wasm32-wasi --crate-type cdylib -O -C strip=symbols -C link-arg=--export=free
WASI_PACKAGES := clang lld wasi-libc libclang-rt-14-dev-wasm32 rustc libstd-rust-dev-wasm32
# Gears are built by `fluxrig gear build` (src/gears/wasm/build.ts): the runtime follows the
# gear's marker (// fluxrig: arena -> stub, reset by the host; else minimal), chosen by measurement
# in bench/wasm.ts, and the exports the ABI needs are checked.
GEAR_BUILD = node dist/src/cli/main.js gear build
TEST_TIMEOUT_MS ?= 120000

.PHONY: help deps nats-server mosquitto chromium wasi-toolchains build gears lint test fuzz bench run-rack run-fleet clean $(addprefix bench-,$(BENCHES))

help:
	@echo "make run-rack    install, build and start a rack on scenarios/quickstart.yaml"
	@echo "make run-fleet   a Mixer and two racks on this machine (docs/mixer.md); FLEET_TLS=1: mTLS"
	@echo "make test        install, build and run every test suite"
	@echo "make fuzz        fuzz a rack over real sockets, 50x the cases of make test, random seed"
	@echo "make bench       run every benchmark ($(BENCHES)); make bench-NAME runs one"
	@echo "make build       compile TypeScript into dist/"
	@echo "make lint        Biome: formatting and lint (part of make test; biome format --write . fixes format)"
	@echo "make gears       compile the example Wasm gears into wasm-gears/build/"
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

# The CLI runs as an executable: its first line names the Node flags a rack runs with.
build: $(DEPS_STAMP) dist/dashboard/index.html
	$(NODE_BIN)/tsc -p tsconfig.json
	chmod +x dist/src/cli/main.js

# The Mixer's dashboard (dashboard/, served at /): type-checked, then bundled with its styles by
# esbuild into dist/dashboard. esbuild rather than Vite: one bundle of TypeScript and CSS is all
# the page needs; a dev server and plugins are not.
DASHBOARD_SRC := dashboard/index.html dashboard/tsconfig.json $(wildcard dashboard/src/*) src/mixer/api-shapes.ts
dist/dashboard/index.html: $(DASHBOARD_SRC) $(DEPS_STAMP)
	$(NODE_BIN)/tsc -p dashboard/tsconfig.json
	$(NODE_BIN)/esbuild dashboard/src/main.ts --bundle --minify --sourcemap --format=esm --target=es2022 \
		--outdir=dist/dashboard --log-level=warning
	cp dashboard/index.html $@

gears: $(GEARS) $(C_GEARS) $(RUST_GEARS)

# The C and Rust gears' compilers, from Debian: installed when missing and running as root.
wasi-toolchains:
	@if command -v clang >/dev/null && command -v wasm-ld >/dev/null && [ -f /usr/lib/wasm32-wasi/libc.a ] \
		&& ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 \
		&& [ -d /usr/lib/rustlib/wasm32-wasi ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's $(WASI_PACKAGES) (the C and Rust gears' compilers)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(WASI_PACKAGES) >/dev/null; \
	else \
		echo "the C and Rust gears need Debian's compilers: sudo apt-get install $(WASI_PACKAGES)" >&2; exit 1; \
	fi

wasm-gears/build/%-c.wasm: wasm-gears/examples/%.c wasm-gears/sdk-c/fluxrig.h | wasi-toolchains
	@mkdir -p wasm-gears/build
	$(CLANG_WASI) -o $@ $<

wasm-gears/build/%-rust.wasm: wasm-gears/examples/%.rs wasm-gears/sdk-rust/fluxrig.rs | wasi-toolchains
	@mkdir -p wasm-gears/build
	$(RUSTC_WASI) -o $@ $<

dist/test-gears/%-c.wasm: test/gears-c/%.c wasm-gears/sdk-c/fluxrig.h | wasi-toolchains
	@mkdir -p dist/test-gears
	$(CLANG_WASI) -o $@ $<

dist/test-gears/%-rust.wasm: test/gears-rust/%.rs wasm-gears/sdk-rust/fluxrig.rs | wasi-toolchains
	@mkdir -p dist/test-gears
	$(RUSTC_WASI) -o $@ $<

wasm-gears/build/%.wasm: wasm-gears/examples/%.ts $(GEAR_SDK) | build
	@mkdir -p wasm-gears/build
	$(GEAR_BUILD) $< -o $@

dist/test-gears/%.wasm: test/gears/%.ts $(GEAR_SDK) | build
	@mkdir -p dist/test-gears
	$(GEAR_BUILD) $< -o $@

# A standalone rack needs no nats-server; only the tests (and a rack on the bus) do.
run-rack: $(DEPS_STAMP) build $(GEARS)
	dist/src/cli/main.js rack --config scenarios/quickstart.rack.yaml

# A Mixer with its embedded NATS and two racks, adopted, each running a pushed scenario.
run-fleet: deps build $(GEARS)
	bash scenarios/fleet/run.sh

# Biome checks formatting and lint first: a style slip fails fast, before the long suites.
lint: $(DEPS_STAMP)
	$(NODE_BIN)/biome ci --colors=off --error-on-warnings .

test: deps chromium build gears $(TEST_GEARS) lint
	node --test --test-reporter=spec --test-timeout=$(TEST_TIMEOUT_MS) $$(find dist/test -name '*.test.js' | sort)

# The fuzz suite of make test, 50 times longer, with a random seed (printed, to replay a failure
# with FUZZ_SEED=N make fuzz).
FUZZ_RUNS ?= 15000
fuzz: deps build gears
	FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_SEED=$${FUZZ_SEED:-$$(node -e 'console.log(require("crypto").randomInt(2**31))')} \
		node --test --test-reporter=spec dist/test/fuzz.test.js

# Every benchmark runs even when one fails (e2e exits 1 over its p99 budget); make bench fails then.
bench: deps build gears $(TEST_GEARS)
	@status=0; for b in $(BENCHES); do $(MAKE) --no-print-directory bench-$$b || status=1; done; exit $$status

$(addprefix bench-,$(BENCHES)): bench-%: deps build gears $(TEST_GEARS)
	@mkdir -p bench/results
	node dist/bench/$*.js

# The dashboard's tests drive Debian's Chromium (playwright-core brings no browser of its own).
# Without it and without root, they are skipped, saying so.
chromium:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium package (for the dashboard's browser tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "the dashboard's browser tests need Chromium: install it with 'sudo apt-get install chromium' (they are skipped without it)" >&2; \
	fi

# The pub/sub benchmark runs mosquitto as the MQTT peer (Debian installs it in /usr/sbin).
bench-pubsub: mosquitto
mosquitto:
	@if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's mosquitto package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
		echo "make bench-pubsub needs mosquitto (the MQTT peer): install it with 'sudo apt-get install mosquitto'" >&2; exit 1; \
	fi

clean:
	rm -rf dist wasm-gears/build
