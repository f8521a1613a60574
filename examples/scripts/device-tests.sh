#!/usr/bin/env bash
# Runs the GPU tests on a machine with GPUs, from what pack-device.sh put in .device/.
# Mooncake's CUDA build, when present in .device/mooncake-cuda/, is used for the nvlink_intra test.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export NCCL_NVLS_ENABLE=0
java="$root/.device/jre/bin/java"
cp=$(ls "$root"/.device/lib/*.jar "$root"/.device/test/*.jar | tr '\n' ':')
if [ -f "$root/.device/mooncake-cuda/libtransfer_engine.so" ]; then
  export WEIGHTLOADER_MOONCAKE_LIB="$root/.device/mooncake-cuda/libtransfer_engine.so"
  export MC_LOG_LEVEL=WARNING
fi
rc=0
run() { # module dir, test classes...
  local dir=$1; shift
  local sel=()
  for c in "$@"; do sel+=(--select-class "$c"); done
  (cd "$root/$dir" && "$java" -cp "$cp" org.junit.platform.console.ConsoleLauncher execute --details=testfeed \
      --disable-banner "${sel[@]}") || rc=1
}
run backend-local io.weightloader.backend.local.GpuLocalLoadTest io.weightloader.backend.local.ReferenceFixturesTest
run backend-nccl io.weightloader.backend.nccl.NcclGpuTwoProcessTest io.weightloader.backend.nccl.NcclControlPlaneTest \
    io.weightloader.backend.nccl.NcclDeadlineGpuTest
run backend-transfer-engine io.weightloader.backend.te.MooncakeGpuTwoProcessTest
exit $rc
