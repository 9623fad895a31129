if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    if [ "$1" -ge 1 ]; then
        systemctl try-restart krafter.service >/dev/null 2>&1 || true
    fi
fi
# /var/lib/krafter (events, keys) is never removed by the package, and the
# krafter user and group are kept with it (as Fedora's packaging guidelines
# ask), so the kept data stays owned by a named account, never a bare uid.
exit 0
