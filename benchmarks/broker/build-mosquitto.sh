#!/usr/bin/env bash
# The fleet benchmark's second broker: Debian's own mosquitto (the installed version, its
# Debian patches applied by dpkg-source) with keepalive-every-second.patch, built into
# build/mosquitto-keepalive-1s/mosquitto. Idempotent: an existing binary is kept.
# Needs deb.debian.org's source index (fetched into a private directory: the machine's
# apt configuration is not changed), gcc, make, libssl-dev, dpkg-dev.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/build/mosquitto-keepalive-1s}
if [ -x "$out/mosquitto" ]; then echo "$out/mosquitto"; exit 0; fi

version=$(dpkg-query -W -f '${Version}' mosquitto)  # the broker the bench's other runs use
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
cat > "$work/sources.list" <<LIST
deb-src http://deb.debian.org/debian $codename main
deb-src http://deb.debian.org/debian-security $codename-security main
deb-src http://deb.debian.org/debian $codename-updates main
LIST
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
apt-get "${apt_private[@]}" update -qq >&2
(cd "$work" && apt-get "${apt_private[@]}" source --download-only -qq "mosquitto=$version" >&2)
dpkg-source -x "$work"/mosquitto_*.dsc "$work/src" >&2
patch -d "$work/src" -p1 < "$here/keepalive-every-second.patch" >&2
options=(WITH_CJSON=no WITH_DOCS=no WITH_SRV=no WITH_WEBSOCKETS=no WITH_SYSTEMD=no)
make -C "$work/src/lib" -j"$(nproc)" "${options[@]}" >&2
make -C "$work/src/src" -j"$(nproc)" "${options[@]}" >&2
mkdir -p "$out"
install -m 0755 "$work/src/src/mosquitto" "$out/mosquitto"
echo "$version + keepalive-every-second.patch" > "$out/VERSION"
echo "$out/mosquitto"
