#!/usr/bin/env bash
# Local loads on a GPU host, with their peers in the same run (docs/PERFORMANCE.md):
#   1. the distribution's bench-local into host memory and into cuda:0 (same-run raw parallel read and raw pinned copy;
#      each of its ratios names its baseline, and the process's first load is held to the same one as its best);
#   2. Python's safetensors.torch.load_file of the same files onto cuda:0 (where Python, torch and safetensors exist);
#   1b. the same into host memory with O_DIRECT (io = direct), warm, and cold where the page cache can be dropped;
#   3. on a host of two GPUs or more, every tensor loaded onto each of its GPUs at once from one process (load
#      --tp-size N --device cuda: each rank reads the whole checkpoint), against the raw parallel read of step 1.
#      With one GPU that is the cuda:0 load of step 1, and the step is skipped; with none, every GPU step is.
# Usage: examples/scripts/local-bench.sh [--dry-run] OUT_DIR [SIZE]   (after examples/scripts/pack-device.sh)
#   The launcher: $WEIGHTLOADER, else the distribution this script sits in (its scripts/), else .device/weightloader.
#   GPUs: $WL_GPUS, else what nvidia-smi -L lists. The checkpoint: $WL_MODEL, else /tmp/wl-local-bench.
#   --dry-run prints the steps' commands and runs none of them.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dry=false
if [ "${1:-}" = "--dry-run" ]; then dry=true; shift; fi
out=${1:?OUT_DIR}
size=${2:-8GiB}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${WEIGHTLOADER:-}" ]; then
  wl=$WEIGHTLOADER
elif [ -x "$here/../bin/weightloader" ] && [ -d "$here/../lib" ]; then # this script is a distribution's
  wl=$(cd "$here/.." && pwd)/bin/weightloader
else
  wl="$root/.device/weightloader/bin/weightloader"
fi
model=${WL_MODEL:-/tmp/wl-local-bench} # on a disk: O_DIRECT needs a file system that has it (not tmpfs)
gpus=${WL_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
run() { # a step's command: printed with --dry-run, run otherwise
  if $dry; then { printf '+'; printf ' %q' "$@"; printf '\n'; } >&2; else "$@"; fi
}
echo "launcher $wl; $gpus GPU(s); checkpoint $model ($size)"
run "$wl" generate --out "$model" --size "$size" --shards 4 --force > /dev/null
{
  echo "== bench-local, host"; run "$wl" bench-local "$model" --repeat 3
  if [ "$gpus" -ge 1 ]; then
    echo "== bench-local, cuda:0"; run "$wl" bench-local "$model" --repeat 3 --device cuda:0
  else
    echo "== bench-local, cuda:0: skipped (no GPU)"
  fi
  echo "== bench-local, host, O_DIRECT (page cache warm)"; run "$wl" bench-local "$model" --repeat 3 --io direct
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo "== bench-local, host, cold (caches dropped before each repeat), buffered"
    run "$wl" bench-local "$model" --repeat 3 --drop-caches
    echo "== bench-local, host, cold, O_DIRECT"; run "$wl" bench-local "$model" --repeat 3 --io direct --drop-caches
  else
    echo "== cold runs skipped: /proc/sys/vm/drop_caches is not writable here"
  fi
} > "$out/bench-local.txt" 2>&1
if $dry; then
  cat "$out/bench-local.txt"
  [ "$gpus" -ge 1 ] && echo "+ python3 (safetensors.torch.load_file of $model onto cuda:0, best of 3) > $out/python.txt"
  if [ "$gpus" -ge 2 ]; then
    echo "+ $wl load --model-path $model --tp-size $gpus --device cuda --report $out/multi-gpu.json > $out/multi-gpu.txt"
  else
    echo "== every GPU at once: skipped ($gpus GPU(s): the cuda:0 load above is the whole host)"
  fi
  exit 0
fi
if [ "$gpus" -lt 1 ]; then
  echo "skipped: no GPU" > "$out/python.txt"
else
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
fi
if [ "$gpus" -ge 2 ]; then
  "$wl" load --model-path "$model" --tp-size "$gpus" --device cuda --report "$out/multi-gpu.json" > "$out/multi-gpu.txt" 2>&1
  python3 - "$out/multi-gpu.json" "$gpus" >> "$out/multi-gpu.txt" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
ranks = doc["ranks"] if "ranks" in doc else {"0": doc}  # one rank: the report itself
total = sum(r["totalBytes"] for r in ranks.values())
slowest = max(r["seconds"] for r in ranks.values())
print(f"{sys.argv[2]} GPUs at once from one process: {total} bytes in {slowest:.3f} s (slowest rank) = "
      f"{total / slowest / 1e9:.2f} GB/s aggregate; per rank: "
      + ", ".join(f"{k} {r['device']} {r['gigabytesPerSecond']:.2f} GB/s" for k, r in ranks.items()))
PY
else
  echo "every GPU at once: skipped ($gpus GPU(s): the cuda:0 load above is the whole host)" > "$out/multi-gpu.txt"
fi
grep -E "^==|^raw |^loader |^first load|^ratio " "$out/bench-local.txt"
cat "$out/python.txt"
tail -1 "$out/multi-gpu.txt"
