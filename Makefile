# crust: `make run` sets up this host and runs crustd; `make test` runs the whole suite.
SHELL := /bin/bash
CARGO ?= cargo
# umoci, python3: other tools' layers in the tests; python3-grpcio: a gRPC client other than tonic
# (tests/foreign_client.rs); dpkg-dev, build-essential: the test images' busybox (conformance/busybox.sh).
PACKAGES := runc containernetworking-plugins docker-registry busybox-static iproute2 iptables openssl \
	umoci python3 python3-grpcio dpkg-dev build-essential
STATIC_TARGET := x86_64-unknown-linux-gnu
PAUSE_STATIC := target/static/$(STATIC_TARGET)/tiny/crust-pause
CNI_CONF_DIR := /etc/cni/net.d
# Where cargo puts its outputs: $CARGO_TARGET_DIR when set, as cargo does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: all deps build build-debug pause install uninstall deb docs run test test-images unit lint fmt bench \
	conformance node-test faults soak clean

all: build

## deps: install the Debian packages crust needs on the host (idempotent).
deps:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## pause: the built-in pause binary, static, in its own target dir so the flag never reaches crustd.
pause:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --profile tiny -p crust-pause \
		--target $(STATIC_TARGET) --target-dir target/static

## build: release binaries (crustd, crust-monitor, crustctl, crust-pause) in target/release.
build: pause
	$(CARGO) build --release --bins -p crust
	install -m 0755 $(PAUSE_STATIC) $(TARGET_DIR)/release/crust-pause

## install: the release binaries to $(BINDIR), the systemd unit, /etc/crust/crust.toml when absent, the
## default CNI conflist when no network exists (deploy/install.sh; DESTDIR=... for a staging root).
## NOBUILD=1 installs binaries built before, from INSTALL_FROM (default the release dir), without cargo:
## the test node (conformance/node) installs the host's build this way.
BINDIR ?= /usr/local/bin
INSTALL_FROM ?= $(TARGET_DIR)/release
install: $(if $(NOBUILD),,build)
	deploy/install.sh install --from $(INSTALL_FROM) --bindir $(BINDIR) $(if $(DESTDIR),--destdir $(DESTDIR))

## deb: target/debian/crust_<version>_amd64.deb from the release build (cargo-deb, from Cargo.toml's
## [package.metadata.deb]; deploy/deb.sh gives it the version, Cargo's + the git commit), then lintian
## on it, failing on errors. Installs cargo-deb (cargo install) and lintian (apt) when missing.
deb: build
	@command -v cargo-deb >/dev/null || nice $(CARGO) install --locked cargo-deb
	@command -v lintian >/dev/null || $(MAKE) deps PACKAGES=lintian
	deb=$$(deploy/deb.sh) && echo "built $$deb" && lintian --fail-on error "$$deb"

## docs: regenerates the man pages (docs/man), the shell completions (deploy/completions) and the
## guide's key reference (docs/configuration.md) from the clap definitions and the configuration types;
## `make test` fails while the committed ones are stale.
docs:
	CRUST_UPDATE_DOCS=1 $(CARGO) test -p crust --bins generated_

## uninstall: the binaries and the unit; configuration, CNI network and state stay.
uninstall:
	deploy/install.sh uninstall --bindir $(BINDIR) $(if $(DESTDIR),--destdir $(DESTDIR))

build-debug: pause
	$(CARGO) build --bins -p crust
	install -m 0755 $(PAUSE_STATIC) $(TARGET_DIR)/debug/crust-pause

## run: set up the host, build, install the default CNI config if none, run crustd in the foreground.
run: deps build
	@if ! find $(CNI_CONF_DIR) -maxdepth 1 \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) 2>/dev/null | grep -q .; then \
		install -D -m 0644 deploy/10-crust.conflist $(CNI_CONF_DIR)/10-crust.conflist; \
		echo "installed $(CNI_CONF_DIR)/10-crust.conflist"; \
	fi
	sysctl -qw net.ipv4.ip_forward=1
	exec $(TARGET_DIR)/release/crustd

## test-images: the static busybox the test images and critest stand-ins are made of, built once per
## machine from Debian's busybox source package (conformance/busybox.sh, cached in
## /var/cache/crust-test-images, where the harness finds it).
test-images: deps
	@bb=$$(conformance/busybox.sh) && echo "busybox for the test images: $$bb"

## test: the whole suite (unit tests and integration tests against real runc, CNI and a registry).
test: deps build-debug test-images
	sysctl -qw net.ipv4.ip_forward=1
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=4

## faults: the fault-injection suite (conformance/tests/faults: full disks, failing registries, hung
## runtimes and CNI plugins, crustd killed at chosen points), one line per scenario and
## `faults: N passed, M failed` (conformance/faults.sh). FAULTS_ARGS=... filters scenarios.
faults: deps build-debug test-images
	sysctl -qw net.ipv4.ip_forward=1
	conformance/faults.sh $(FAULTS_ARGS)

## soak: SOAK_MINUTES (default 30) of pod and container churn with exec, logs and stats traffic
## against one crustd (conformance/tests/soak.rs; not part of CI): a row of crustd's RSS, fds, threads,
## tokio tasks and its monitors' RSS every 5 minutes, the slopes after warm-up, and zero errors.
soak: deps build-debug test-images
	sysctl -qw net.ipv4.ip_forward=1
	$(CARGO) test -p crust-conformance --test soak -- --nocapture --test-threads=1

unit:
	$(CARGO) test --workspace --lib --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p crust-conformance --test faults --test soak -- -D warnings

fmt:
	$(CARGO) fmt --all

## conformance: critest (from PATH; skipped with a message when absent) against crustd, images from a
## local registry ($CRUST_TEST_REGISTRY) of stand-ins. Arguments for critest: CRITEST_ARGS=...
conformance: test-images
	CRITEST_ARGS="$(CRITEST_ARGS)" conformance/critest.sh

## node-test: crust installed as a systemd service on a Debian 12 VM (systemd, cgroup v2, AppArmor) booted
## under qemu with no network device: the node tests (conformance/tests/node_systemd.rs) and critest (when
## on PATH) inside; one line `node-test: N passed, M failed` (conformance/node/node-test.sh). Installs
## qemu and debootstrap from bookworm-backports when missing; the image is cached in
## /var/cache/crust-node-test. It boots bookworm-backports' kernel (6.12: user-namespaced pods work);
## NODE_KERNEL=6.1 boots the stock kernel (they are refused there, and checkpoint/restore works).
node-test: deps
	conformance/node/node-test.sh --deps
	conformance/node/node-test.sh

clean:
	$(CARGO) clean

## bench: crust (and containerd when installed) side by side, with the floor; table + JSON. With critest
## on PATH, critest --benchmark's container spec against both as well.
bench: build test-images
	$(MAKE) deps PACKAGES="$(PACKAGES) containerd"
	sysctl -qw net.ipv4.ip_forward=1
	$(CARGO) build --release -p crust-conformance --bin crust-bench
	CRUST_BIN_DIR=$(CURDIR)/target/release target/release/crust-bench --json conformance/results/bench-$$(date -u +%Y%m%d-%H%M).json $(BENCH_ARGS)
