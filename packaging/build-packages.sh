#!/usr/bin/env bash
# Builds the static krafter binary and the .deb and .rpm around it.
#   packaging/build-packages.sh            → target/debian/*.deb, target/generate-rpm/*.rpm
# Needs: cargo-deb and cargo-generate-rpm (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
# The package metadata names paths under ./target.
unset CARGO_TARGET_DIR

for tool in cargo-deb cargo-generate-rpm; do
    command -v "$tool" >/dev/null || cargo install --locked "$tool"
done

# Fully static glibc binary (the musl target cannot be fetched here). NSS
# is not used for DNS resolution by a static glibc build's getaddrinfo
# beyond /etc/hosts and DNS, which is all Krafter needs.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$TARGET"
strip "target/$TARGET/release/krafter"

cargo deb --no-build --no-strip --target "$TARGET"
cargo generate-rpm --target "$TARGET"
ls -l target/"$TARGET"/debian/*.deb target/"$TARGET"/generate-rpm/*.rpm 2>/dev/null \
    || ls -l target/debian/*.deb target/generate-rpm/*.rpm
