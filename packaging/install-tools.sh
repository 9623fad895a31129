#!/usr/bin/env bash
# One-time setup for building the packages: installs the pinned versions of
# the two cargo subcommands that packaging/build-packages.sh uses (about
# 4-5 minutes of compiling on two cores, once per machine), and, as root on
# Debian/Ubuntu, the `rpm` tool that packaging/check-packages.sh reads the
# .rpm with. Already-installed pinned versions are kept, so running it again
# costs a second. .ci/run runs it before the packaging check.
#   bash packaging/install-tools.sh
set -euo pipefail

# Pinned: a new release of either tool can change file lists or script
# handling; bump these on purpose and re-run packaging/check-packages.sh.
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

installed=$(cargo install --list)
install_pinned() { # crate version
    if grep -qx "$1 v$2:" <<<"$installed"; then
        echo "$1 $2: already installed"
    else
        echo "$1 $2: installing (cargo install --locked)"
        cargo install --locked --quiet "$1" --version "=$2"
    fi
}
install_pinned cargo-deb "$CARGO_DEB_VERSION"
install_pinned cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

if ! command -v rpm >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "rpm: installing (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null
    else
        echo "rpm: not found; install it (e.g. sudo apt-get install rpm) to run packaging/check-packages.sh" >&2
    fi
fi
