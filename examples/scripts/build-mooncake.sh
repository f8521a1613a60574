#!/usr/bin/env bash
# Builds Mooncake's libtransfer_engine.so (the C API that backend-transfer-engine binds with JNA) and packs it
# with the libraries it needs into one directory that can be copied to another machine (e.g. the GPU host).
# The Mooncake Python wheel links the engine statically and does not export the C API, hence this build.
#
# Usage: examples/scripts/build-mooncake.sh --source MOONCAKE_DIR [--cuda [CUDA_ROOT]] [--out DIR] [--jobs N]
#                                           [--install-deps]
#   --source DIR    a Mooncake checkout with submodules: git clone --recursive https://github.com/kvcache-ai/Mooncake
#   --cuda [ROOT]   also build the CUDA parts (nvlink_intra transport); ROOT defaults to /usr/local/cuda
#   --out DIR       bundle directory (default: the distribution's mooncake/ when run from a distribution's
#                   scripts/, where the launcher finds it; else examples/target/mooncake-<cpu|cuda> in this repository)
#   --jobs N        parallel compile jobs (default: nproc)
#   --install-deps  apt-get install the build packages first (Debian 12 / Ubuntu), i.e. by hand:
#     apt-get install cmake g++ make pkg-config libgflags-dev libgoogle-glog-dev libjsoncpp-dev libnuma-dev \
#       libibverbs-dev libboost-dev libboost-system-dev libboost-thread-dev libssl-dev libgtest-dev libunwind-dev \
#       libcurl4-openssl-dev libasio-dev libzstd-dev libhiredis-dev libmsgpack-dev libyaml-cpp-dev python3-dev patchelf
# Build directory: ${TMPDIR:-/tmp}/weightloader-mooncake-build-<cpu|cuda>, kept so that a rerun is incremental.
# Then: WEIGHTLOADER_MOONCAKE_LIB=<out>/libtransfer_engine.so mvn -B verify
set -euo pipefail

TESTED_COMMIT=3b5a5941   # the Mooncake commit this project's binding was verified against
PACKAGES="cmake g++ make pkg-config libgflags-dev libgoogle-glog-dev libjsoncpp-dev libnuma-dev libibverbs-dev
  libboost-dev libboost-system-dev libboost-thread-dev libssl-dev libgtest-dev libunwind-dev libcurl4-openssl-dev
  libasio-dev libzstd-dev libhiredis-dev libmsgpack-dev libyaml-cpp-dev python3-dev patchelf"
# Libraries the target machine must provide itself: glibc and the compiler runtime (must match the host),
# the CUDA driver and runtime (must match the installed driver), rdma-core's libibverbs/libnl and libnuma
# (tied to the host's kernel drivers and present on RDMA/GPU hosts). Everything else ldd finds is shipped.
BASE_LIBS='^(linux-vdso|ld-linux.*|libc|libm|libmvec|libdl|libpthread|librt|libutil|libresolv|libstdc\+\+|libgcc_s|libcuda|libcudart|libnvidia.*|libibverbs|libnl-3|libnl-route-3|libnuma)\.so'

die() { echo "error: $*" >&2; exit 1; }
src="" cuda="" out="" jobs=$(nproc) install_deps=0
while [ $# -gt 0 ]; do
  case "$1" in
    --source) src=$2; shift 2 ;;
    --cuda) if [ $# -gt 1 ] && [[ $2 != --* ]]; then cuda=$2; shift 2; else cuda=/usr/local/cuda; shift; fi ;;
    --out) out=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --install-deps) install_deps=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$src" ] || die "--source MOONCAKE_DIR is required (see --help)"
[ -d "$src" ] || die "no such directory: $src (give the Mooncake checkout with --source)"
src=$(cd "$src" && pwd)
[ -f "$src/mooncake-transfer-engine/include/transfer_engine_c.h" ] || die "$src is not a Mooncake checkout"
for sub in yalantinglibs pybind11; do   # the top-level CMakeLists needs both, even without Python
  [ -n "$(ls -A "$src/extern/$sub" 2>/dev/null)" ] ||
    die "$src/extern/$sub is empty: run (cd $src && git submodule update --init extern/yalantinglibs extern/pybind11)"
done
variant=cpu; [ -n "$cuda" ] && variant=cuda
here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/../bin/weightloader" ] && [ -d "$here/../mooncake" ]; then
  out=${out:-$(cd "$here/../mooncake" && pwd)}   # run from a distribution: its launcher looks in mooncake/
else
  out=${out:-$(cd "$here/../.." && pwd)/examples/target/mooncake-$variant}
fi
build=${TMPDIR:-/tmp}/weightloader-mooncake-build-$variant

commit=unknown
[ -e "$src/.git" ] && commit=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)
echo "Mooncake $commit ($variant build)"
[[ $commit == "$TESTED_COMMIT"* ]] ||
  echo "warning: not the tested commit $TESTED_COMMIT; the C API or the build flags may differ" >&2

if [ "$install_deps" = 1 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # shellcheck disable=SC2086  # word splitting of the package list is wanted
  $sudo apt-get install -y --no-install-recommends $PACKAGES ||
    { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends $PACKAGES; }
else
  for tool in cmake g++ make patchelf pkg-config; do
    command -v $tool >/dev/null || die "$tool not found; install: apt-get install $(echo $PACKAGES)"
  done
  for h in glog/logging.h gflags/gflags.h json/json.h asio.hpp numa.h infiniband/verbs.h yaml-cpp/yaml.h; do
    echo "#include <$h>" | g++ -std=c++20 -E -x c++ -I/usr/include/jsoncpp - >/dev/null 2>&1 ||
      die "header <$h> not found; install: apt-get install $(echo $PACKAGES)"
  done
fi

# 1. yalantinglibs (mostly headers) into a private prefix, found by Mooncake's find_package(yalantinglibs).
start=$(date +%s)
ylt=$build/yalantinglibs
cmake -S "$src/extern/yalantinglibs" -B "$ylt/build" -DCMAKE_INSTALL_PREFIX="$ylt/prefix" \
  -DBUILD_EXAMPLES=OFF -DBUILD_BENCHMARK=OFF -DBUILD_UNIT_TESTS=OFF >/dev/null
cmake --build "$ylt/build" -j "$jobs" >/dev/null
cmake --install "$ylt/build" >/dev/null

# 2. The transfer engine only, as shared libraries, with the P2P handshake (no metadata server needed).
flags=(-DBUILD_SHARED_LIBS=ON -DWITH_TE=ON -DWITH_STORE=OFF -DWITH_STORE_RUST=OFF -DWITH_P2P_STORE=OFF -DWITH_EP=OFF
       -DUSE_ETCD=OFF -DUSE_REDIS=OFF -DUSE_HTTP=OFF -DUSE_TENT=OFF -DBUILD_UNIT_TESTS=OFF -DBUILD_EXAMPLES=OFF
       -DBUILD_BENCHMARK=OFF)
if [ -n "$cuda" ]; then
  [ -f "$cuda/include/cuda.h" ] || [ -f "$cuda/targets/$(uname -m)-linux/include/cuda.h" ] ||
    die "no cuda.h under $cuda: pass the CUDA toolkit root, --cuda /usr/local/cuda-13.0"
  flags+=(-DUSE_CUDA=ON -DUSE_INTRA_NVLINK=ON -DCUDAToolkit_ROOT="$cuda")
  # Linking needs libcuda.so, which comes with the driver or the toolkit's stubs/. A toolkit assembled from pip
  # wheels has neither: link against a generated stub that only defines the driver API names (soname
  # libcuda.so.1, like NVIDIA's stub); the GPU machine's real driver library is used at run time.
  if ! ls "$cuda"/lib*/stubs/libcuda.so "$cuda"/targets/*/lib/stubs/libcuda.so >/dev/null 2>&1 &&
     ! ldconfig -p | grep 'libcuda\.so ' >/dev/null; then
    inc=$(dirname "$(ls "$cuda"/include/cuda.h "$cuda"/targets/*/include/cuda.h 2>/dev/null | head -1)")
    mkdir -p "$build/cuda-stub"
    gcc -E -P -I"$inc" "$inc/cuda.h" | grep -o '\bcu[A-Z][A-Za-z0-9_]* *(' | tr -d ' (' | sort -u |
      sed 's/.*/void &(void) {}/' > "$build/cuda-stub/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$build/cuda-stub/libcuda.so" "$build/cuda-stub/cuda_stub.c"
    echo "note: no libcuda.so in $cuda, linking against a generated stub ($build/cuda-stub)"
    flags+=(-DCUDA_cuda_driver_LIBRARY="$build/cuda-stub/libcuda.so")
  fi
else
  flags+=(-DUSE_CUDA=OFF)
fi
cmake -S "$src" -B "$build/mooncake" -DCMAKE_PREFIX_PATH="$ylt/prefix" "${flags[@]}" >"$build/cmake.log" 2>&1 ||
  { tail -30 "$build/cmake.log"; die "cmake failed, see $build/cmake.log"; }
cmake --build "$build/mooncake" -j "$jobs" --target transfer_engine
lib=$(find "$build/mooncake/mooncake-transfer-engine" -name libtransfer_engine.so -type f | head -1)
[ -n "$lib" ] || die "libtransfer_engine.so not found under $build/mooncake"
elapsed=$(( $(date +%s) - start ))

# 3. The bundle: the library plus every library ldd resolves that is not in BASE_LIBS (the build's own
# libmooncake_common/libasio and distribution libraries such as glog), all looking beside themselves first.
rm -rf "$out" && mkdir -p "$out"
cp "$lib" "$out/"
ldd "$lib" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
  [[ $name =~ $BASE_LIBS ]] || cp -L "$path" "$out/$name"
done
for f in "$out"/*.so*; do
  chmod u+w "$f"
  strip --strip-unneeded "$f"                  # debug info is most of the size (RelWithDebInfo build)
  patchelf --set-rpath '$ORIGIN' "$f"          # RUNPATH: find the bundled libraries without LD_LIBRARY_PATH
done

cuda_version=off
if [ -n "$cuda" ]; then
  cuda_version=$(cat "$cuda/version.txt" 2>/dev/null || "$cuda/bin/nvcc" --version 2>/dev/null | grep release ||
    grep -h '#define CUDA_VERSION' "$cuda"/include/cuda.h "$cuda"/targets/*/include/cuda.h 2>/dev/null | head -1)
fi
cat > "$out/BUILD-INFO.txt" <<EOF
mooncake_commit: $commit (tested: $TESTED_COMMIT)
cuda: $([ -n "$cuda" ] && echo "on ($cuda)" || echo off)
cuda_version: $cuda_version
cmake_flags: ${flags[*]}
date: $(date -u +%Y-%m-%dT%H:%M:%SZ)
host: $(uname -m), $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
gcc: $(gcc --version | head -1)
EOF

# 4. Checks: the C API is exported, and every dependency resolves from the bundle or the base system.
for sym in createTransferEngine submitTransfer registerLocalMemory; do
  nm -D --defined-only "$out/libtransfer_engine.so" | grep -w "$sym" >/dev/null || die "$sym is not exported"
done
missing=$(env -u LD_LIBRARY_PATH ldd "$out/libtransfer_engine.so" | awk '/not found/ {print $1}')
for m in $missing; do
  case $m in
    libcuda.so.1) echo "note: libcuda.so.1 not found: no NVIDIA driver here; the GPU machine's driver provides it" ;;
    libcudart.so.*) echo "note: $m not found here; the GPU machine's CUDA runtime provides it" ;;
    *) die "$m does not resolve from the bundle (ldd $out/libtransfer_engine.so)" ;;
  esac
done
ls -la "$out"
echo "built in ${elapsed}s; bundle: $out"
echo "use: WEIGHTLOADER_MOONCAKE_LIB=$out/libtransfer_engine.so"
