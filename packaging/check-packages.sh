#!/usr/bin/env bash
# Builds the packages and checks what an operator relies on: file lists,
# conffile marking, maintainer scripts, the unit (systemd-analyze verify),
# a static binary, and that the installed binary runs with the installed
# config. Run by .ci/run; needs root only to apt-get install rpm.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
unset CARGO_TARGET_DIR

if ! command -v rpm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq rpm >/dev/null
fi
bash packaging/build-packages.sh >/dev/null
DEB=$(ls target/$TARGET/debian/krafter_*_amd64.deb | tail -n 1)
RPM=$(ls target/$TARGET/generate-rpm/krafter-*.rpm | tail -n 1)
fail() { echo "packaging check FAILED: $*" >&2; exit 1; }

echo "== .deb: $DEB"
# (grep -q on a pipe would SIGPIPE the producer under pipefail: capture first)
info=$(dpkg-deb -I "$DEB")
grep -q "Package: krafter" <<<"$info" || fail "deb control"
files=$(dpkg-deb -c "$DEB")
for f in ./usr/bin/krafter ./etc/krafter/krafter.toml ./usr/lib/systemd/system/krafter.service \
         ./usr/share/doc/krafter/krafter.toml.example; do
    grep -q " $f\$" <<<"$files" || fail "deb lacks $f"
done
ctrl=$(mktemp -d)
dpkg-deb -e "$DEB" "$ctrl"
grep -qx "/etc/krafter/krafter.toml" "$ctrl/conffiles" || fail "krafter.toml is not a conffile"
grep -q "adduser --system" "$ctrl/postinst" || fail "postinst does not create the krafter user"
grep -q "deb-systemd-helper enable krafter.service" "$ctrl/postinst" || fail "postinst does not enable the unit"
if grep -v '^ *#' "$ctrl/postrm" | grep -q "rm -rf /var/lib/krafter"; then fail "postrm deletes data"; fi

echo "== .rpm: $RPM"
list=$(rpm -qlp "$RPM" 2>/dev/null)
grep -qx /usr/bin/krafter <<<"$list" || fail "rpm lacks /usr/bin/krafter"
grep -qx /usr/lib/systemd/system/krafter.service <<<"$list" || fail "rpm lacks the unit"
configs=$(rpm -qp --configfiles "$RPM" 2>/dev/null)
grep -qx /etc/krafter/krafter.toml <<<"$configs" || fail "rpm config file"
scripts=$(rpm -qp --scripts "$RPM" 2>/dev/null)
grep -q "useradd --system" <<<"$scripts" || fail "rpm pre-install script"
flags=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null)
grep -q "^cn /etc/krafter/krafter.toml" <<<"$flags" || fail "krafter.toml must be %config(noreplace): $flags"

echo "== static binary"
root=$(mktemp -d)
dpkg-deb -x "$DEB" "$root"
ldd_out=$(ldd "$root/usr/bin/krafter" 2>&1 || true)
grep -Eq "not a dynamic executable|statically linked" <<<"$ldd_out" || fail "binary is dynamic: $ldd_out"

echo "== systemd unit"
unit="$root/krafter.service"
sed "s|/usr/bin/krafter|$root/usr/bin/krafter|" "$root/usr/lib/systemd/system/krafter.service" > "$unit"
verify=$(systemd-analyze verify "$unit" 2>&1 || true)
# The build host has no krafter user; anything else is a real problem.
grep -v -e "^$" -e "User=krafter" -e "Group=krafter" <<<"$verify" && fail "systemd-analyze verify: $verify"
systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -n 1 || true

echo "== installed binary with the installed config"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
KRAFTER_STORAGE__PATH="$data" KRAFTER_SERVER__LISTEN="127.0.0.1:$port" \
    "$root/usr/bin/krafter" --config "$root/etc/krafter/krafter.toml" check-config >/dev/null
KRAFTER_STORAGE__PATH="$data" KRAFTER_SERVER__LISTEN="127.0.0.1:$port" \
    "$root/usr/bin/krafter" --config "$root/etc/krafter/krafter.toml" serve 2>"$data/log" &
pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || fail "installed binary did not become ready: $(cat "$data/log")"
[ -s "$data/admin.key" ] || fail "no bootstrap key"
kill -TERM "$pid"
wait "$pid" || fail "non-zero exit on SIGTERM"
echo "packaging checks passed"
