#!/usr/bin/env bash
# Runs the GPU tests on a machine with GPUs, from what pack-device.sh put in .device/: the backends and their
# dependencies come from the distribution's lib/ (what ships), the test classes from .device/test/. The Mooncake
# bundle in the distribution's mooncake/, when there, is used for the nvlink_intra test.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export NCCL_NVLS_ENABLE=0
dist="$root/.device/weightloader"
java="$dist/jre/bin/java"
cp=$(ls "$dist"/lib/*.jar "$root"/.device/test/*.jar | tr '\n' ':')
if [ -f "$dist/mooncake/libtransfer_engine.so" ]; then
  export WEIGHTLOADER_MOONCAKE_LIB="$dist/mooncake/libtransfer_engine.so"
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
run api/host-tests io.weightloader.host.GpuMemorySaverTest
exit $rc
