#!/usr/bin/env bash
# The GPU benchmark and its raw baselines, in one run on a machine with two GPUs (see docs/PERFORMANCE.md):
#   1. PyTorch per-tensor NCCL broadcast and a raw CUDA peer copy of the same tensors (torch_baselines.py);
#   2. Mooncake's own nvlink_intra READ from C, when the bundle in the distribution's mooncake/ holds an
#      nvlink_smoke program built outside the project against it;
#   3. the distribution's `weightloader bench-gpu`: seed on GPU 0 under a GEMM load, client on GPU 1, nccl then
#      transfer_engine (with Mooncake's raw read driven from Java as its same-run baseline).
# Usage: examples/scripts/gpu-bench.sh OUT_DIR [SIZE]   (run after examples/scripts/pack-device.sh)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?OUT_DIR}
size=${2:-8GB}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
wl="$root/.device/weightloader/bin/weightloader"
# cuBLAS for the GEMM load: from the system, else from PyTorch's wheels
cublas=$(ldconfig -p | awk '/libcublas\.so\.13 /{print $NF; exit}')
[ -n "$cublas" ] || cublas=$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH="$(dirname "$cublas"):${LD_LIBRARY_PATH:-}"
mc="$root/.device/weightloader/mooncake"
[ -f "$mc/libtransfer_engine.so" ] && export WEIGHTLOADER_MOONCAKE_LIB="$mc/libtransfer_engine.so" MC_LOG_LEVEL=WARNING
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv > "$out/gpus.csv"
nvidia-smi topo -m > "$out/topo.txt" 2>&1
"$wl" bench-gpu --size "$size" --write-specs "$out/specs.json"
python3 "$root/examples/scripts/torch_baselines.py" "$out/specs.json" > "$out/torch.json" 2> "$out/torch.err"
echo "torch: $(cat "$out/torch.json")"
if [ -x "$mc/nvlink_smoke" ]; then
  bytes=$(python3 -c "import json;print(json.load(open('$out/torch.json'))['broadcast_per_tensor']['bytes'])")
  mib=$(( (bytes + 64 * 1048576 - 1) / (64 * 1048576) * 64 ))   # whole 64 MiB requests
  (cd "$mc" && LD_LIBRARY_PATH="$mc:$LD_LIBRARY_PATH" ./nvlink_smoke "$mib" 64 5 127.0.0.1 0 1) > "$out/mooncake-c.txt" 2>&1
  echo "mooncake C: $(grep -E 'GB/s|PASS|FAIL' "$out/mooncake-c.txt" | tail -4 | tr '\n' ' ')"
fi
"$wl" bench-gpu --size "$size" --json "$out/gpu-bench.json" \
  2> "$out/bench-gpu.err" | tee "$out/bench-gpu.txt"
