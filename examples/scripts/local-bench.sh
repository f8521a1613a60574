#!/usr/bin/env bash
# Local loads on a GPU host, with their peers in the same run (docs/PERFORMANCE.md):
#   1. the distribution's bench-local into host memory and into cuda:0 (same-run raw parallel read and raw pinned copy);
#   2. Python's safetensors.torch.load_file of the same files onto cuda:0 (where Python, torch and safetensors exist);
#   1b. the same into host memory with O_DIRECT (io = direct), warm, and cold where the page cache can be dropped;
#   3. every tensor loaded onto each of the host's GPUs at once from one process (load --tp-size N --device cuda:
#      each rank reads the whole checkpoint), against the raw parallel read of step 1.
# Usage: examples/scripts/local-bench.sh OUT_DIR [SIZE]   (after examples/scripts/pack-device.sh)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?OUT_DIR}
size=${2:-8GiB}
mkdir -p "$out"
wl="$root/.device/weightloader/bin/weightloader"
model=/tmp/wl-local-bench
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
"$wl" generate --out "$model" --size "$size" --shards 4 --force > /dev/null
{
  echo "== bench-local, host"; "$wl" bench-local "$model" --repeat 3
  echo "== bench-local, cuda:0"; "$wl" bench-local "$model" --repeat 3 --device cuda:0
  echo "== bench-local, host, O_DIRECT (page cache warm)"; "$wl" bench-local "$model" --repeat 3 --io direct
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo "== bench-local, host, cold (caches dropped before each repeat), buffered"
    "$wl" bench-local "$model" --repeat 3 --drop-caches
    echo "== bench-local, host, cold, O_DIRECT"; "$wl" bench-local "$model" --repeat 3 --io direct --drop-caches
  else
    echo "== cold runs skipped: /proc/sys/vm/drop_caches is not writable here"
  fi
} > "$out/bench-local.txt" 2>&1
python3 - "$model" > "$out/python.txt" 2>&1 <<'PY'
import glob, os, sys, time
try:
    import torch
    from safetensors.torch import load_file
except ImportError as e:
    print(f"skipped: {e}"); sys.exit(0)
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors")))
size = sum(os.path.getsize(f) for f in files)
best = None
for _ in range(3):
    torch.cuda.synchronize(); t0 = time.perf_counter()
    tensors = [load_file(f, device="cuda:0") for f in files]
    torch.cuda.synchronize(); t = time.perf_counter() - t0
    best = t if best is None else min(best, t)
    del tensors
print(f"python safetensors.torch.load_file -> cuda:0: {best:.3f} s  {size / best / 1e9:.2f} GB/s "
      f"(best of 3, {len(files)} files, {size} bytes)")
PY
"$wl" load --model-path "$model" --tp-size "$gpus" --device cuda --report "$out/multi-gpu.json" > "$out/multi-gpu.txt" 2>&1
python3 - "$out/multi-gpu.json" "$gpus" >> "$out/multi-gpu.txt" <<'PY'
import json, sys
ranks = json.load(open(sys.argv[1]))["ranks"]
total = sum(r["totalBytes"] for r in ranks.values())
slowest = max(r["seconds"] for r in ranks.values())
print(f"{sys.argv[2]} GPUs at once from one process: {total} bytes in {slowest:.3f} s (slowest rank) = "
      f"{total / slowest / 1e9:.2f} GB/s aggregate; per rank: "
      + ", ".join(f"{k} {r['device']} {r['gigabytesPerSecond']:.2f} GB/s" for k, r in ranks.items()))
PY
grep -E "==|parallel|raw copy|loader  |ratio loader/raw|O_DIRECT|direct" "$out/bench-local.txt"
cat "$out/python.txt"
tail -1 "$out/multi-gpu.txt"
