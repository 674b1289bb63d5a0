#!/usr/bin/env bash
# Build dist/storebox_<version>_<arch>.deb with dpkg-deb (no debhelper):
#   packaging/build-deb.sh [arm64|amd64]        (default arm64; `make deb ARCH=...`)
#
# On any machine (this amd64 one builds both): the program and its locked dependencies
# (requirements-<arch>.txt, --require-hashes) are installed from wheels of the *target*
# platform (pip --platform/--only-binary) into a venv laid out for /opt/storebox, and
# precompiled to .pyc for CPython 3.11 (Raspberry Pi OS bookworm's python3). Nothing is
# downloaded or compiled at install time; the target needs only python3 (3.11).
set -euo pipefail
export LC_ALL=C
ARCH=${1:-${ARCH:-arm64}}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
py=${PYTHON:-$repo/.venv/bin/python}
# shellcheck source=platform.sh
source "$here/platform.sh"
storebox_pip_platform "$ARCH"

quiet_pip() {  # this machine's pip config names local indexes that may not exist
  "$py" -m pip --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}

pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$pyver" = 3.11 ] || { echo "build-deb: needs CPython 3.11 to precompile for the target (got $pyver)" >&2; exit 2; }
version=${VERSION:-$("$py" -c 'import tomllib; print(tomllib.load(open("'"$repo"'/pyproject.toml", "rb"))["project"]["version"])')}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}

build=$repo/build/deb-$ARCH
stage=$build/root
rm -rf "$build"; mkdir -p "$stage" "$repo/dist"
venv=/opt/storebox
site=$stage$venv/lib/python3.11/site-packages

# 1. the program as a wheel (pure Python), built from this checkout
quiet_pip wheel -q --no-deps --wheel-dir "$build/wheel" "$repo"
# 2. its dependencies for the target, exactly as locked; then the program itself
quiet_pip install -q --no-compile --no-deps --require-hashes "${PIP_PLATFORM[@]}" \
  --target "$site" -r "$here/requirements-$ARCH.txt"
rm -rf "$site/bin"
quiet_pip install -q --no-compile --no-deps "${PIP_PLATFORM[@]}" --target "$site" \
  "$build"/wheel/storebox-*.whl
rm -rf "$site/bin"   # console scripts written for this machine's python; ours are below
# lab/ (the drill's world: gateway simulator, shop in namespaces) is for a checkout, not
# for the box; `storebox drill` says so. Its files leave the record with it.
rm -rf "$site/lab"
for record in "$site"/storebox-*.dist-info/{RECORD,top_level.txt}; do
  if [ -f "$record" ]; then sed -i -e '/^lab\//d' -e '/^lab$/d' "$record"; fi
done
find "$site" -name '__pycache__' -prune -exec rm -rf {} +

# 3. the venv around it: Debian's python3.11, nothing from the system's site-packages
mkdir -p "$stage$venv/bin"
ln -s /usr/bin/python3.11 "$stage$venv/bin/python3.11"
ln -s python3.11 "$stage$venv/bin/python3"
ln -s python3.11 "$stage$venv/bin/python"
ln -s lib "$stage$venv/lib64"
cat > "$stage$venv/pyvenv.cfg" <<CFG
home = /usr/bin
include-system-site-packages = false
version = 3.11
CFG
cat > "$stage$venv/bin/storebox" <<'SCRIPT'
#!/opt/storebox/bin/python3
import sys

from firmware.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
SCRIPT
chmod 0755 "$stage$venv/bin/storebox"
mkdir -p "$stage/usr/bin"
ln -s "$venv/bin/storebox" "$stage/usr/bin/storebox"

# 4. .pyc for 3.11, recorded as in /opt (not the build tree); "unchecked-hash": dpkg
#    owns the sources, so the interpreter never stats them nor tries to rewrite a .pyc
"$py" -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$stage" -p / \
  "$stage$venv/lib" >/dev/null

# 5. the OS integration: unit, sysusers, udev, modules, sysctl, config, docs
cp -a "$here/root/." "$stage/"
install -D -m 0644 "$repo/systemd/storebox.service" "$stage/lib/systemd/system/storebox.service"
install -D -m 0644 "$repo/README.md" "$stage/usr/share/doc/storebox/README.md"
install -D -m 0644 "$repo/firmware/data/example.toml" "$stage/usr/share/doc/storebox/example.toml"
pin_factory=$([ "$ARCH" = arm64 ] && echo lgpio || echo mock)
mkdir -p "$stage/etc/storebox"
sed "s/@PIN_FACTORY@/$pin_factory/" "$here/etc/storebox.toml.in" > "$stage/etc/storebox/storebox.toml"
chmod 0644 "$stage/etc/storebox/storebox.toml"
chmod 0755 "$stage/etc/storebox"

# 6. DEBIAN/
mkdir -p "$stage/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$here/debian/$script" "$stage/DEBIAN/$script"
done
(cd "$stage" && find etc -type f | sed 's|^|/|' | sort) > "$stage/DEBIAN/conffiles"
size_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size_kb/" \
  "$here/debian/control" > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
  | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"

# same mtimes everywhere: the .deb is reproducible from the same commit
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
out="$repo/dist/storebox_${version}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "$out ($(du -h "$out" | cut -f1), installed $((size_kb / 1024)) MB)"
