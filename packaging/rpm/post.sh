# The state directory, so that `krafter serve` run by hand as the krafter
# user (no systemd, e.g. in a container) finds it; systemd's
# StateDirectory= would create the same on first start.
if [ ! -d /var/lib/krafter ]; then
    install -d -m 0700 -o krafter -g krafter /var/lib/krafter
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    # Enabled, not started: read /etc/krafter/krafter.toml, then `systemctl start krafter`.
    if [ "$1" -eq 1 ]; then
        systemctl enable krafter.service >/dev/null 2>&1 || true
    fi
fi
exit 0
