getent group krafter >/dev/null || groupadd --system krafter
getent passwd krafter >/dev/null || useradd --system --gid krafter --home-dir /var/lib/krafter \
    --no-create-home --shell /sbin/nologin --comment "Krafter webhook relay" krafter
exit 0
