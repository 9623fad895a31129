#!/usr/bin/env bash
# Builds the static krafter binary and the .deb and .rpm around it.
#   packaging/build-packages.sh            → target/x86_64-unknown-linux-gnu/{debian,generate-rpm}/
# Needs cargo-deb and cargo-generate-rpm: install them once with
#   bash packaging/install-tools.sh
# (this script never installs anything itself).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
# The package metadata names paths under ./target.
unset CARGO_TARGET_DIR

for tool in cargo-deb cargo-generate-rpm; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-packages.sh: $tool is not installed; run once: bash packaging/install-tools.sh" >&2
        exit 1
    fi
done

# Fully static glibc binary (the musl target cannot be fetched here). NSS
# is not used for DNS resolution by a static glibc build's getaddrinfo
# beyond /etc/hosts and DNS, which is all Krafter needs.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$TARGET"
strip "target/$TARGET/release/krafter"

cargo deb --no-build --no-strip --target "$TARGET"
cargo generate-rpm --target "$TARGET"
ls -l target/"$TARGET"/debian/*.deb target/"$TARGET"/generate-rpm/*.rpm
