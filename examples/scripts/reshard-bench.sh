#!/usr/bin/env bash
# Tensor-parallel layouts on a GPU host, each against its baseline in the same run (docs/PERFORMANCE.md):
#   1. bench-reshard with the built-in engine in host memory: a tp-2 llama seed resharded into tp-1 and tp-4 clients
#      against the same-tp load of the same bytes; and rank 3 of tp 4 from disk against a raw pread of its ranges;
#   2. bench-reshard with Mooncake nvlink_intra: a tp-2 seed on cuda:0 and cuda:1 resharded into a tp-1 client on
#      cuda:1 (and tp-4 ranks on both GPUs), against Mooncake's raw read of the same bytes and the same-tp load.
# Usage: examples/scripts/reshard-bench.sh OUT_DIR [SIZE]   (after examples/scripts/pack-device.sh --mooncake DIR)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?OUT_DIR}
size=${2:-4GiB}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 MC_LOG_LEVEL=WARNING
wl="$root/.device/weightloader/bin/weightloader"
lib="$root/.device/weightloader/mooncake/libtransfer_engine.so"
nproc > "$out/machine.txt"; nvidia-smi --query-gpu=index,name --format=csv >> "$out/machine.txt" 2>&1
echo "== host, built-in engine" > "$out/reshard.txt"
timeout 600 "$wl" bench-reshard --size "$size" --client-tp 1,4 --local-dir /tmp/wl-reshard-local \
  --json "$out/reshard-host.json" >> "$out/reshard.txt" 2>&1
echo "== GPUs, Mooncake nvlink_intra" >> "$out/reshard.txt"
# nvlink_intra cannot read GPU memory of its own process: the seed runs apart, holding a checkpoint of the same size
model=/tmp/wl-reshard-gpu
"$wl" generate --out "$model" --size "$size" --force > /dev/null
rm -f "$out/seed.ready"
"$wl" seed --model-path "$model" --tp-size 2 --tp-layout llama --device cuda --engine mooncake --protocol nvlink_intra \
  --mooncake-library "$lib" --token bench-token --port 0 --ready-file "$out/seed.ready" > "$out/seed.log" 2>&1 &
seed=$!
for _ in $(seq 1 600); do [ -s "$out/seed.ready" ] && break; kill -0 $seed 2>/dev/null || break; sleep 0.2; done
timeout 400 "$wl" bench-reshard --size "$size" --seed "127.0.0.1:$(cat "$out/seed.ready")" --engine mooncake \
  --protocol nvlink_intra --mooncake-library "$lib" --client-device cuda:1,cuda:0 --client-tp 1,4 \
  --json "$out/reshard-gpu.json" >> "$out/reshard.txt" 2>&1
kill $seed; wait $seed 2>/dev/null
grep -vE "^\[|^\s*$" "$out/reshard.txt" | grep -v "WARN\|INFO" | head -40
