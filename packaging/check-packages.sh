#!/usr/bin/env bash
# Builds the packages and checks what an operator relies on: that
# build-packages.sh installs nothing itself, file lists, conffile marking,
# maintainer scripts, shell completions and the man page, the unit
# (systemd-analyze verify), a static binary, that the packaged binary runs
# with the packaged config, and (as root on Debian, as CI runs) a real
# `dpkg -i` and `dpkg --purge` of the .deb on this machine: nothing printed
# but dpkg's progress, the krafter user, `krafter serve` in the foreground
# as that user (no systemd), what purge keeps, and a reinstall over it.
# Run by .ci/run after packaging/install-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
unset CARGO_TARGET_DIR
fail() { echo "packaging check FAILED: $*" >&2; exit 1; }
# Whatever this script starts or installs is undone however it ends.
cleanups=()
server_pid="" # a krafter started here and not yet waited for (so its pid is not reused)
cleanup() {
    local i
    if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
    for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[i]}" || true; done
}
trap cleanup EXIT

echo "== build-packages.sh without the packaging tools"
# It must stop with one line naming packaging/install-tools.sh, and never
# install anything itself: a `cargo` stub records any call (a silent
# `cargo install`, or a build).
stub=$(mktemp -d)
cleanups+=("rm -rf '$stub'")
printf '#!/bin/sh\necho "cargo $*" >> "%s/called"\nexit 1\n' "$stub" > "$stub/cargo"
chmod +x "$stub/cargo"
if out=$(PATH="$stub:/usr/bin:/bin" bash packaging/build-packages.sh 2>&1); then
    fail "build-packages.sh succeeded without cargo-deb: $out"
fi
[ ! -e "$stub/called" ] || fail "build-packages.sh ran cargo without the tools: $(cat "$stub/called")"
[ "$(wc -l <<<"$out")" -eq 1 ] || fail "want one line telling what to run, got: $out"
grep -q "bash packaging/install-tools.sh" <<<"$out" || fail "the error does not name install-tools.sh: $out"

command -v rpm >/dev/null || fail "rpm is not installed: run bash packaging/install-tools.sh (as root) first"
bash packaging/build-packages.sh >/dev/null
DEB=$(ls target/$TARGET/debian/krafter_*_amd64.deb | tail -n 1)
RPM=$(ls target/$TARGET/generate-rpm/krafter-*.rpm | tail -n 1)

echo "== .deb: $DEB"
# (grep -q on a pipe would SIGPIPE the producer under pipefail: capture first)
info=$(dpkg-deb -I "$DEB")
grep -q "Package: krafter" <<<"$info" || fail "deb control"
files=$(dpkg-deb -c "$DEB")
for f in ./usr/bin/krafter ./etc/krafter/krafter.toml ./usr/lib/systemd/system/krafter.service \
         ./usr/share/doc/krafter/krafter.toml.example \
         ./usr/share/bash-completion/completions/krafter ./usr/share/zsh/vendor-completions/_krafter \
         ./usr/share/fish/vendor_completions.d/krafter.fish ./usr/share/man/man1/krafter.1.gz; do
    grep -q " $f\$" <<<"$files" || fail "deb lacks $f"
done
ctrl=$(mktemp -d)
cleanups+=("rm -rf '$ctrl'")
dpkg-deb -e "$DEB" "$ctrl"
grep -qx "/etc/krafter/krafter.toml" "$ctrl/conffiles" || fail "krafter.toml is not a conffile"
grep -q "adduser --system" "$ctrl/postinst" || fail "postinst does not create the krafter user"
grep -q "deb-systemd-helper enable krafter.service" "$ctrl/postinst" || fail "postinst does not enable the unit"
if grep -v '^ *#' "$ctrl/postrm" | grep -q "rm -rf /var/lib/krafter"; then fail "postrm deletes data"; fi

echo "== .rpm: $RPM"
list=$(rpm -qlp "$RPM" 2>/dev/null)
grep -qx /usr/bin/krafter <<<"$list" || fail "rpm lacks /usr/bin/krafter"
grep -qx /usr/lib/systemd/system/krafter.service <<<"$list" || fail "rpm lacks the unit"
for f in /usr/share/bash-completion/completions/krafter /usr/share/zsh/site-functions/_krafter \
         /usr/share/fish/vendor_completions.d/krafter.fish /usr/share/man/man1/krafter.1.gz; do
    grep -qx "$f" <<<"$list" || fail "rpm lacks $f"
done
configs=$(rpm -qp --configfiles "$RPM" 2>/dev/null)
grep -qx /etc/krafter/krafter.toml <<<"$configs" || fail "rpm config file"
scripts=$(rpm -qp --scripts "$RPM" 2>/dev/null)
grep -q "useradd --system" <<<"$scripts" || fail "rpm pre-install script"
grep -q "install -d -m 0700 -o krafter -g krafter /var/lib/krafter" <<<"$scripts" \
    || fail "rpm post-install does not create the state directory"
# Erasing keeps the data and so the user that owns it (Fedora guidelines).
if grep -v '^ *#' <<<"$scripts" | grep -q -e userdel -e "rm -rf /var/lib/krafter"; then
    fail "rpm scripts delete the krafter user or the data"
fi
flags=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null)
grep -q "^cn /etc/krafter/krafter.toml" <<<"$flags" || fail "krafter.toml must be %config(noreplace): $flags"

echo "== static binary"
root=$(mktemp -d)
cleanups+=("rm -rf '$root'")
dpkg-deb -x "$DEB" "$root"
ldd_out=$(ldd "$root/usr/bin/krafter" 2>&1 || true)
grep -Eq "not a dynamic executable|statically linked" <<<"$ldd_out" || fail "binary is dynamic: $ldd_out"

echo "== shell completions and man page"
# What a user relies on: bash completes the subcommands, the zsh and fish
# files are completion scripts for krafter, the man page is gzipped roff
# naming the commands.
words=$(bash -c '
    source "$1/usr/share/bash-completion/completions/krafter"
    COMP_WORDS=(krafter se); COMP_CWORD=1; COMP_LINE="krafter se"; COMP_POINT=${#COMP_LINE}
    "$(complete -p krafter | sed -E "s/.* -F ([^ ]+) .*/\1/")" krafter se krafter
    echo "${COMPREPLY[*]}"' _ "$root") || fail "the bash completion does not load: $words"
for w in serve send-test-event; do
    grep -qw -- "$w" <<<"$words" || fail "bash completion of 'krafter se' lacks $w: $words"
done
head -n 1 "$root/usr/share/zsh/vendor-completions/_krafter" | grep -qx "#compdef krafter" \
    || fail "the zsh completion does not start with #compdef krafter"
grep -q "^complete -c krafter " "$root/usr/share/fish/vendor_completions.d/krafter.fish" \
    || fail "the fish completion has no 'complete -c krafter' line"
man=$(gzip -dc "$root/usr/share/man/man1/krafter.1.gz") || fail "the man page is not gzip"
grep -q '^\.TH krafter 1' <<<"$man" || fail "the man page has no .TH krafter 1 header"
for w in serve backup completions; do
    grep -q -- "$w" <<<"$man" || fail "the man page does not mention $w"
done

echo "== systemd unit"
unit="$root/krafter.service"
sed "s|/usr/bin/krafter|$root/usr/bin/krafter|" "$root/usr/lib/systemd/system/krafter.service" > "$unit"
verify=$(systemd-analyze verify "$unit" 2>&1 || true)
# The build host has no krafter user; anything else is a real problem.
grep -v -e "^$" -e "User=krafter" -e "Group=krafter" <<<"$verify" && fail "systemd-analyze verify: $verify"
systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -n 1 || true

echo "== packaged binary with the packaged config"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
cleanups+=("rm -rf '$data'")
KRAFTER_STORAGE__PATH="$data" KRAFTER_SERVER__LISTEN="127.0.0.1:$port" \
    "$root/usr/bin/krafter" --config "$root/etc/krafter/krafter.toml" check-config >/dev/null
KRAFTER_STORAGE__PATH="$data" KRAFTER_SERVER__LISTEN="127.0.0.1:$port" \
    "$root/usr/bin/krafter" --config "$root/etc/krafter/krafter.toml" serve 2>"$data/log" &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || fail "packaged binary did not become ready: $(cat "$data/log")"
[ -s "$data/admin.key" ] || fail "no bootstrap key"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
[ "$status" -eq 0 ] || fail "non-zero exit ($status) on SIGTERM"

echo "== dpkg -i, krafter serve as the krafter user without systemd, dpkg --purge"
# This installs the package on this machine for real (CI runs as root on a
# throw-away Debian machine), and purges it and the data it made however
# the check ends. It refuses to touch a machine where krafter is present.
if [ "$(id -u)" -ne 0 ] || ! command -v dpkg >/dev/null; then
    [ -z "${CI:-}" ] || fail "the install check needs root on Debian (CI runs as root)"
    echo "*** SKIPPED: the real dpkg -i / dpkg --purge check needs root on Debian ***" >&2
    echo "packaging checks passed (install check skipped)"
    exit 0
fi
state=$(dpkg-query -W -f '${db:Status-Status}' krafter 2>/dev/null || true)
case "$state" in
    "" | not-installed) ;;
    *) fail "the krafter package is present here ($state); this check would purge it: dpkg --purge krafter first" ;;
esac
if getent passwd krafter >/dev/null; then fail "a krafter user exists already; this check would remove it"; fi
if getent group krafter >/dev/null; then fail "a krafter group exists already; this check would remove it"; fi
[ ! -e /var/lib/krafter ] || fail "/var/lib/krafter exists; this check would take it over (move it away first)"
cleanups+=("dpkg --purge krafter >/dev/null 2>&1; rm -rf /var/lib/krafter")
# dpkg waits for nobody: retry while another apt/dpkg holds its lock.
dpkg_run() {
    local out i
    export LC_ALL=C
    for i in $(seq 1 60); do
        if out=$("$@" 2>&1); then printf '%s\n' "$out"; return 0; fi
        grep -q "lock" <<<"$out" || { printf '%s\n' "$out"; return 1; }
        sleep 2
    done
    printf '%s\n' "$out"
    return 1
}
# Nothing but dpkg's own progress lines, the unit's enable symlink and
# postrm's one note about the kept data: any other line (an adduser or
# deluser warning, a shell error) fails the check.
quiet_dpkg() { # what output
    local extra
    extra=$(grep -v -E \
        -e '^Selecting previously unselected package krafter\.$' \
        -e '^\(Reading database \.\.\.' \
        -e '^Preparing to unpack .*krafter_.*\.deb \.\.\.$' \
        -e '^Unpacking krafter \(' -e '^Setting up krafter \(' \
        -e '^Removing krafter \(' -e '^Purging configuration files for krafter \(' \
        -e '^Processing triggers for [a-z0-9.+-]* \(' \
        -e '^Created symlink /etc/systemd/system/multi-user\.target\.wants/krafter\.service ' \
        -e '^krafter: /var/lib/krafter was kept \(now owned by root\); remove it yourself' \
        <<<"$2" || true)
    [ -z "$extra" ] || fail "$1 printed more than progress (a warning?): $extra"
}
out=$(dpkg_run dpkg -i "$DEB") || fail "dpkg -i: $out"
quiet_dpkg "dpkg -i" "$out"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd krafter) || fail "no krafter user after install"
[ "$uid" -lt 1000 ] || fail "krafter is not a system user (uid $uid)"
[ "$home" = /var/lib/krafter ] || fail "krafter's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "krafter's shell is $shell"
[ "$(getent group krafter | cut -d: -f3)" = "$gid" ] || fail "krafter's primary group is not krafter"
[ "$(stat -c '%U:%G %a' /var/lib/krafter)" = "krafter:krafter 700" ] \
    || fail "/var/lib/krafter after install: $(stat -c '%U:%G %a' /var/lib/krafter)"
version=$(/usr/bin/krafter --version) || fail "/usr/bin/krafter --version failed"
grep -q "^krafter " <<<"$version" || fail "--version printed: $version"
[ -L /etc/systemd/system/multi-user.target.wants/krafter.service ] || fail "krafter.service is not enabled"

# README "Running without systemd": the packaged config, in the
# foreground, as the krafter user, JSON logs on stderr, SIGTERM to stop.
# setpriv execs krafter itself (as a container's USER does), so the
# signal and the exit status are krafter's own. Only the port is moved off
# the packaged 127.0.0.1:8080, which may be in use here.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
cleanups+=("rm -f '$log'")
KRAFTER_SERVER__LISTEN="127.0.0.1:$port" KRAFTER_LOG__FORMAT=json \
    setpriv --reuid=krafter --regid=krafter --init-groups -- \
    /usr/bin/krafter --config /etc/krafter/krafter.toml serve 2>"$log" </dev/null &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || fail "serve as krafter did not become ready: $(cat "$log")"
[ "$(stat -c '%U %a' /var/lib/krafter/admin.key)" = "krafter 600" ] \
    || fail "admin.key: $(stat -c '%U %a' /var/lib/krafter/admin.key 2>&1)"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
[ "$status" -eq 0 ] || fail "serve as krafter: exit $status on SIGTERM: $(cat "$log")"
[ -s "$log" ] || fail "serve wrote no log to stderr"
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        assert isinstance(json.loads(line), dict), line
' "$log" || fail "log.format=json: every stderr line must be a JSON object: $(cat "$log")"

out=$(dpkg_run dpkg --purge krafter) || fail "dpkg --purge: $out"
quiet_dpkg "dpkg --purge" "$out"
[ ! -e /usr/bin/krafter ] || fail "purge left /usr/bin/krafter"
[ ! -e /etc/krafter/krafter.toml ] || fail "purge left /etc/krafter/krafter.toml"
if getent passwd krafter >/dev/null; then fail "purge left the krafter user"; fi
if getent group krafter >/dev/null; then fail "purge left the krafter group"; fi
# The data is kept, and handed to root: no file owned by a bare uid.
[ -s /var/lib/krafter/admin.key ] || fail "purge removed the data in /var/lib/krafter"
[ "$(stat -c '%U:%G %a' /var/lib/krafter)" = "root:root 700" ] \
    || fail "/var/lib/krafter after purge: $(stat -c '%U:%G %a' /var/lib/krafter)"
orphans=$(find /var/lib/krafter \( ! -user root -o ! -group root \) -printf '%p %u:%g\n')
[ -z "$orphans" ] || fail "purge left files not owned by root: $orphans"

# Installing again gives the kept data back to the new krafter user.
out=$(dpkg_run dpkg -i "$DEB") || fail "dpkg -i over kept data: $out"
quiet_dpkg "dpkg -i over kept data" "$out"
strays=$(find /var/lib/krafter \( ! -user krafter -o ! -group krafter \) -printf '%p %u:%g\n')
[ -z "$strays" ] || fail "reinstall did not give the kept data back to krafter: $strays"
out=$(dpkg_run dpkg --purge krafter) || fail "dpkg --purge: $out"
quiet_dpkg "dpkg --purge after the reinstall" "$out"
echo "packaging checks passed"
