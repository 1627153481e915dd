# Shared by the scripts: install missing Debian packages, configure and build.
# Sourced, not run.

MNEMO_APT_PACKAGES=(meson ninja-build pkg-config gcc libc6-dev libhdf5-dev hdf5-tools libcmocka-dev
                    libopenblas-dev libjansson-dev libutf8proc-dev libsqlite3-dev libopenmpi-dev openmpi-bin)
# scripts/test's Python step (docs/python.md): Debian's python3 with venv, numpy and torch (the
# virtual environment sees them; transformers and pytest come from PyPI into it)
MNEMO_PYTHON_PACKAGES=(python3 python3-venv python3-numpy python3-torch)
# scripts/fuzz: clang, its libFuzzer and sanitizer runtimes (Debian 12: libclang-rt-dev, which
# pulls libclang-rt-14-dev) and LLVM's OpenMP for the library's -fopenmp
MNEMO_FUZZ_PACKAGES=(clang libclang-rt-dev libomp-dev)

# Installs the Debian packages named, skipping those already installed.
mnemo_apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# mnemo_build DIR [meson options...]: configure once (reconfigure if options change), then build.
mnemo_build() {
    local dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson configure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@"
    fi
    ninja -C "$dir"
}
