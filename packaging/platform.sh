# Sourced by lock.sh and build-deb.sh: pip's target-platform options for ARCH.
# Raspberry Pi OS / Debian 12 "bookworm" has glibc 2.36 and CPython 3.11.
storebox_pip_platform() {
  local machine
  case "$1" in
    arm64) machine=aarch64 ;;
    amd64) machine=x86_64 ;;
    *) echo "unknown ARCH '$1' (arm64 or amd64)" >&2; return 2 ;;
  esac
  PIP_PLATFORM=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311
                --platform "manylinux_2_36_$machine" --platform "manylinux_2_34_$machine"
                --platform "manylinux_2_28_$machine" --platform "manylinux2014_$machine")
  # What every shared object in the package must be (tests/packaging checks them).
  ELF_MACHINE=$([ "$1" = arm64 ] && echo AArch64 || echo "Advanced Micro Devices X86-64")
}
