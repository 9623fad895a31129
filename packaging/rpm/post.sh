if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    # Enabled, not started: read /etc/krafter/krafter.toml, then `systemctl start krafter`.
    if [ "$1" -eq 1 ]; then
        systemctl enable krafter.service >/dev/null 2>&1 || true
    fi
fi
exit 0
