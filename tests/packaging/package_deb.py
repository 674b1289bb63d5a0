"""The built packages (`make deb`, both architectures): fields, contents, size, and every
shared object of the target's machine and glibc (bookworm: 2.36). Run by
`make test-package` (collected with python_files=package_*.py; not part of `make test`,
which does not build the packages)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
MAX_SIZE = 60 * 1024 * 1024
GLIBC_MAX = (2, 36)
MACHINE = {"arm64": "AArch64", "amd64": "Advanced Micro Devices X86-64"}


def deb(arch: str) -> Path:
    path = REPO / "dist" / f"storebox_{VERSION}_{arch}.deb"
    if not path.exists():
        pytest.fail(f"{path} missing: `make deb ARCH={arch}` (make test-package builds both)")
    return path


@pytest.fixture(scope="module", params=["arm64", "amd64"])
def tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[str, Path]:
    arch: str = request.param
    out = tmp_path_factory.mktemp(f"deb-{arch}")
    subprocess.run(["dpkg-deb", "-R", str(deb(arch)), str(out)], check=True)
    return arch, out


def field(arch: str, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb(arch)), name], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_fields_and_size(tree: tuple[str, Path]) -> None:
    arch, _ = tree
    assert field(arch, "Package") == "storebox"
    assert field(arch, "Version") == VERSION
    assert field(arch, "Architecture") == arch
    depends = field(arch, "Depends")
    for needed in ("python3 (>= 3.11)", "nftables", "conntrack", "iproute2"):
        assert needed in depends
    size = deb(arch).stat().st_size
    assert size <= MAX_SIZE, f"{size / 2**20:.1f} MB > 60 MB"


def test_contents(tree: tuple[str, Path]) -> None:
    arch, root = tree
    for path in ("opt/storebox/pyvenv.cfg", "opt/storebox/bin/storebox",
                 "lib/systemd/system/storebox.service", "usr/lib/sysusers.d/storebox.conf",
                 "lib/udev/rules.d/70-storebox.rules", "usr/lib/modules-load.d/storebox.conf",
                 "etc/storebox/storebox.toml", "usr/share/doc/storebox/README.installer",
                 "opt/storebox/lib/python3.11/site-packages/firmware/cli/selftest.py"):
        assert (root / path).exists(), path
    assert (root / "usr/bin/storebox").readlink() == Path("/opt/storebox/bin/storebox")
    assert (root / "opt/storebox/bin/python3").readlink() == Path("python3.11")
    assert (root / "opt/storebox/bin/python3.11").readlink() == Path("/usr/bin/python3.11")
    assert "/etc/storebox/storebox.toml" in (root / "DEBIAN/conffiles").read_text().split()
    for script in ("postinst", "prerm", "postrm"):
        assert (root / "DEBIAN" / script).stat().st_mode & 0o111
    assert (root / "lib/systemd/system/storebox.service").read_text() == \
        (REPO / "systemd/storebox.service").read_text()
    config = (root / "etc/storebox/storebox.toml").read_text()
    assert 'key_provider = "systemd-creds"' in config
    assert f'pin_factory = "{"lgpio" if arch == "arm64" else "mock"}"' in config
    sysusers = (root / "usr/lib/sysusers.d/storebox.conf").read_text()
    assert "m storebox dialout" in sysusers and "m storebox gpio" in sysusers
    udev = (root / "lib/udev/rules.d/70-storebox.rules").read_text()
    assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in udev and "storebox/modem-at" in udev
    assert "option" in (root / "usr/lib/modules-load.d/storebox.conf").read_text().split()
    site = root / "opt/storebox/lib/python3.11/site-packages"
    assert not (site / "pip").exists(), "no pip in the installed venv"
    assert not (site / "lab").exists(), "the drill's lab/ is for a checkout, not the box"
    if arch == "arm64":
        assert list(site.glob("lgpio*.so")) or list(site.glob("_lgpio*.so")), \
            "the real lgpio (0.2.2.0, manylinux_2_34), not the empty placeholder"


def test_every_module_is_precompiled_for_311(tree: tuple[str, Path]) -> None:
    _, root = tree
    site = root / "opt/storebox/lib/python3.11/site-packages"
    missing = [py for py in site.rglob("*.py")
               if not (py.parent / "__pycache__" / f"{py.stem}.cpython-311.pyc").exists()]
    assert not missing, f"{len(missing)} modules without a 3.11 .pyc, e.g. {missing[:3]}"
    stray = [p for p in site.rglob("*.pyc") if ".cpython-311" not in p.name]
    assert not stray


def _glibc_versions(so: Path) -> list[tuple[int, ...]]:
    out = subprocess.run(["readelf", "-V", "-W", str(so)], capture_output=True, text=True,
                         check=True).stdout
    return [tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", out)]


def test_shared_objects_are_of_the_target(tree: tuple[str, Path]) -> None:
    arch, root = tree
    objects = [p for p in (root / "opt").rglob("*.so*") if p.is_file()]
    assert len(objects) >= 10, "the compiled dependencies are there"
    wrong, too_new = [], []
    for so in objects:
        header = subprocess.run(["readelf", "-h", "-W", str(so)], capture_output=True,
                                text=True, check=True).stdout
        machine = re.search(r"Machine:\s+(.+)", header)
        if not machine or machine.group(1).strip() != MACHINE[arch]:
            wrong.append(f"{so.name}: {machine.group(1) if machine else '?'}")
        newest = max(_glibc_versions(so), default=(0,))
        if newest > GLIBC_MAX:
            too_new.append(f"{so.name}: GLIBC_{'.'.join(map(str, newest))}")
    assert not wrong, f"not {MACHINE[arch]}: {wrong}"
    assert not too_new, f"need a newer glibc than bookworm's 2.36: {too_new}"


def test_locks_are_hashed(tree: tuple[str, Path]) -> None:
    arch, _ = tree
    lock = (REPO / "packaging" / f"requirements-{arch}.txt").read_text()
    pins = re.findall(r"^([a-z0-9-]+)==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}$", lock, re.M)
    assert len(pins) == lock.count("=="), "every requirement pinned with its hash"
    for needed in ("aiohttp", "cryptography", "pyhpke", "python-pkcs11"):
        assert needed in pins
