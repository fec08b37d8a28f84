#!/usr/bin/env bash
# Installs the receiver from this clone where deploy/systemd/trackbridge.service expects it:
# a virtual environment at /opt/trackbridge (the unit runs /opt/trackbridge/bin/trackbridge),
# the unit, its credentials drop-in (kept if already there), /etc/trackbridge for secrets, and
# the `trackbridge` system user. Run as root from anywhere:
#
#   sudo deploy/systemd/install.sh
#   # then: edit /etc/systemd/system/trackbridge.service.d/credentials.conf and the files it
#   # names, and: systemctl enable --now trackbridge
#
# Again after `git pull` to upgrade (the venv is replaced; the queue in /var/lib/trackbridge
# stays): stop the service first, start it after. For a staging tree (tests, packaging), set
# TRACKBRIDGE_PREFIX and TRACKBRIDGE_ROOT (then no user is made and systemd is not touched);
# TRACKBRIDGE_PIP_ARGS adds pip options.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
prefix=${TRACKBRIDGE_PREFIX:-/opt/trackbridge}
root=${TRACKBRIDGE_ROOT:-}
read -r -a pip_args <<< "${TRACKBRIDGE_PIP_ARGS:-}"

python3 -m venv --clear "$prefix"
"$prefix/bin/pip" install -q --disable-pip-version-check -c "$repo/.ci/constraints.txt" \
  "${pip_args[@]}" "$repo[server]"
"$prefix/bin/trackbridge" --version

units="$root/etc/systemd/system"
install -d -m 0755 "$units" "$units/trackbridge.service.d"
install -m 0644 "$repo/deploy/systemd/trackbridge.service" "$units/trackbridge.service"
if [ ! -e "$units/trackbridge.service.d/credentials.conf" ]; then
  install -m 0600 "$repo/deploy/systemd/trackbridge.service.d/credentials.conf.example" \
    "$units/trackbridge.service.d/credentials.conf"
fi
install -d -m 0750 "$root/etc/trackbridge"

if [ -z "$root" ]; then
  id -u trackbridge >/dev/null 2>&1 || useradd --system --home-dir /var/lib/trackbridge \
    --shell /usr/sbin/nologin trackbridge
  chgrp trackbridge /etc/trackbridge
  systemctl daemon-reload
fi
echo "installed in $prefix; next: edit $units/trackbridge.service.d/credentials.conf," \
  "then systemctl enable --now trackbridge"
