#!/usr/bin/env bash
# The product as a host team runs it on one machine with two GPUs, through the distribution's launcher only
# (no test class path): each step is a command a user would type, checked byte-exact against a local load of
# the same checkpoint (SHA-256 of every tensor). Writes a log and the load reports under OUT_DIR.
#   1. backends on the GPU host;
#   2. an nccl-only seed on cuda:0 with no Mooncake present, a client on cuda:1 over nccl;
#   3. the README's GPU-to-GPU transfer_engine commands as written (Mooncake nvlink_intra; the client follows the
#      seed's transport), and a client configured for a transport the seed does not serve (refused);
#   4. a 2-rank seed (cuda:0, cuda:1) and 2-rank clients (cuda:1, cuda:0) over nccl and over nvlink_intra;
#   5. tensor-parallel layouts: a rank's slices from disk into cuda:0; a tp-2 llama seed (cuda:0, cuda:1) resharded
#      into a tp-1 client and a tp-4 rank over nvlink_intra; nccl refusing another tp size;
#   6. fan-out: a root on cuda:0, a relay on cuda:1 that loaded from it, a client on cuda:0 sent to the relay by the
#      root's directory (tree), over nvlink_intra.
# Usage: examples/scripts/gpu-product.sh OUT_DIR [SIZE]   (after examples/scripts/pack-device.sh --mooncake DIR)
# STEP_TIMEOUT (seconds, default 300) bounds each step.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?OUT_DIR}
size=${2:-2GiB}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 MC_LOG_LEVEL=WARNING
dist="$root/.device/weightloader"
export out
wl="$dist/bin/weightloader"
export wl
lib="$dist/mooncake/libtransfer_engine.so"
model=/tmp/wl-product-model
log="$out/product.log"
pass=0; fail=0
say() { echo "$*" | tee -a "$log"; }
check() { # name, command...: passes when the command exits 0
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  # functions (remote, same) run in a bash that timeout can bound
  if timeout "${STEP_TIMEOUT:-300}" bash -c "$(declare -f remote same sameas); \"\$@\"" step "$@" >>"$log" 2>&1; then
    say "PASS $name ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"; pass=$((pass + 1))
  else
    say "FAIL $name (exit $?)"; fail=$((fail + 1))
  fi
}
same() { # report.json [rank]: every tensor's SHA-256 equals the local load's
  sameas "$out/local.json" "$@"
}
sameas() { # reference.json report.json [rank]: every tensor's SHA-256 equals the reference's
  python3 - "$@" <<'PY'
import json, sys
ref = {t["name"]: t["sha256"] for t in json.load(open(sys.argv[1]))["tensors"]}
rep = json.load(open(sys.argv[2]))
if len(sys.argv) > 3:
    rep = rep["ranks"][sys.argv[3]]
got = {t["name"]: t["sha256"] for t in rep["tensors"]}
assert got == ref, f"{len(got)} tensors, {sum(got.get(k) != v for k, v in ref.items())} differ"
print(f"byte-exact: {len(got)} tensors, {rep['totalBytes']} bytes, {rep['seconds']:.3f} s, engine {rep['engine']},"
      f" device {rep['device']}")
PY
}
seed() { # ready-file, args...: starts a seed in the background, waits until it serves; prints its port
  local ready=$1; shift
  rm -f "$ready"
  "$wl" seed --port 0 --ready-file "$ready" "$@" >>"$log" 2>&1 &
  echo $! > "$ready.pid"
  for _ in $(seq 1 600); do
    [ -s "$ready" ] && { cat "$ready"; return 0; }
    kill -0 "$(cat "$ready.pid")" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
stop() { # the seed runs outside this shell's jobs (started in a subshell): signal it and wait, bounded
  local pid; pid=$(cat "$1.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null
}
remote() { # port, args...
  local port=$1; shift
  "$wl" load --load-format remote_instance --remote-instance-weight-loader-seed-instance-ip 127.0.0.1 \
    --remote-instance-weight-loader-seed-instance-service-port "$port" "$@"
}

: > "$log"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv >> "$log"
say "distribution: $(ls "$dist/lib" | tr '\n' ' ')"
"$wl" generate --out "$model" --size "$size" --shards 4 --force >>"$log" 2>&1
check "local load (the reference checksums)" "$wl" load --model-path "$model" --checksum sha256 --report "$out/local.json"

# 1. backends, with the Mooncake bundle in the distribution's mooncake/
"$wl" backends --json > "$out/backends.json" 2>>"$log"; "$wl" backends >> "$log" 2>&1
check "backends lists local, transfer_engine, nccl; CUDA, NCCL and Mooncake found" python3 -c "
import json; b = {x['name']: x for x in json.load(open('$out/backends.json'))['backends']}
assert set(b) >= {'local', 'transfer_engine', 'nccl'}, b.keys()
assert all(p['present'] for n in ('nccl', 'transfer_engine') for p in b[n]['nativeParts']), b"

# 2. nccl only, no Mooncake anywhere
mv "$dist/mooncake" "$dist/mooncake.off"
if port=$(seed "$out/r2" --model-path "$model" --device cuda:0 --serve nccl); then
  check "nccl-only seed on cuda:0 without Mooncake; client on cuda:1" remote "$port" \
    --remote-instance-weight-loader-backend nccl --device cuda:1 --checksum sha256 --report "$out/nccl.json"
  check "  ... byte-exact" same "$out/nccl.json"
else say "FAIL nccl-only seed did not start"; fail=$((fail + 1)); fi
stop "$out/r2"
mv "$dist/mooncake.off" "$dist/mooncake"

# 3. the README's commands as written (issue 16): the client is not told the protocol
if port=$(seed "$out/r3" --model-path "$model" --device cuda:0 --engine mooncake --protocol nvlink_intra \
    --mooncake-library "$lib"); then
  check "transfer_engine nvlink_intra, README command (client follows the seed's transport)" remote "$port" \
    --remote-instance-weight-loader-backend transfer_engine --engine mooncake --mooncake-library "$lib" \
    --device cuda:1 --checksum sha256 --report "$out/te.json"
  check "  ... byte-exact" same "$out/te.json"
  remote "$port" --remote-instance-weight-loader-backend transfer_engine --engine mooncake --protocol tcp \
    --device cuda:1 > "$out/mismatch.txt" 2>&1
  check "a client configured for tcp against an nvlink_intra seed is refused, naming both" \
    grep -q "serves transport nvlink_intra, but this client is configured for tcp" "$out/mismatch.txt"
  remote "$port" --remote-instance-weight-loader-backend transfer_engine --engine mooncake --device cpu \
    > "$out/to-host.txt" 2>&1
  check "nvlink_intra into host memory is refused with what would work" grep -q "Load into cuda:N" "$out/to-host.txt"
else say "FAIL nvlink_intra seed did not start"; fail=$((fail + 1)); fi
stop "$out/r3"

# 4. two ranks each side, one seed process and one client process
if port=$(seed "$out/r4" --model-path "$model" --tp-size 2 --device cuda --serve transfer_engine,nccl \
    --engine mooncake --protocol nvlink_intra); then
  check "2-rank client (cuda:1, cuda:0) over nccl" remote "$port" --remote-instance-weight-loader-backend nccl \
    --tp-size 2 --device cuda:1,cuda:0 --checksum sha256 --report "$out/tp2-nccl.json"
  check "  ... rank 0 byte-exact" same "$out/tp2-nccl.json" tp0-pp0
  check "  ... rank 1 byte-exact" same "$out/tp2-nccl.json" tp1-pp0
  check "2-rank client (cuda:1, cuda:0) over transfer_engine nvlink_intra" remote "$port" \
    --remote-instance-weight-loader-backend transfer_engine --engine mooncake \
    --tp-size 2 --device cuda:1,cuda:0 --checksum sha256 --report "$out/tp2-te.json"
  check "  ... rank 0 byte-exact" same "$out/tp2-te.json" tp0-pp0
  check "  ... rank 1 byte-exact" same "$out/tp2-te.json" tp1-pp0
else say "FAIL 2-rank seed did not start"; fail=$((fail + 1)); fi
stop "$out/r4"

# 5. tensor-parallel layouts (issue 12)
check "local reference: rank 3 of tp 4 (llama) into host memory" "$wl" load --model-path "$model" --tp-size 4 \
  --tp-rank 3 --tp-layout llama --checksum sha256 --report "$out/local-tp4r3.json"
check "rank 3 of tp 4 from disk into cuda:0" "$wl" load --model-path "$model" --tp-size 4 --tp-rank 3 \
  --tp-layout llama --device cuda:0 --checksum sha256 --report "$out/gpu-tp4r3.json"
check "  ... byte-exact (= host slices)" sameas "$out/local-tp4r3.json" "$out/gpu-tp4r3.json"
if port=$(seed "$out/r5" --model-path "$model" --tp-size 2 --tp-layout llama --device cuda \
    --serve transfer_engine,nccl --engine mooncake --protocol nvlink_intra); then
  check "tp-2 llama seed resharded into a tp-1 client on cuda:0 (nvlink_intra)" remote "$port" --engine mooncake \
    --device cuda:0 --checksum sha256 --report "$out/reshard-tp1.json"
  check "  ... byte-exact (whole tensors)" same "$out/reshard-tp1.json"
  check "tp-2 llama seed resharded into rank 3 of tp 4 on cuda:1 (nvlink_intra)" remote "$port" --engine mooncake \
    --tp-size 4 --tp-rank 3 --tp-layout llama --device cuda:1 --checksum sha256 --report "$out/reshard-tp4r3.json"
  check "  ... byte-exact (= rank 3's slices from disk)" sameas "$out/local-tp4r3.json" "$out/reshard-tp4r3.json"
  remote "$port" --remote-instance-weight-loader-backend nccl --tp-size 4 --tp-rank 3 --tp-layout llama \
    --device cuda:1 > "$out/nccl-tp4.txt" 2>&1
  check "nccl refuses another tp size, naming transfer_engine" grep -q "transfer_engine" "$out/nccl-tp4.txt"
else say "FAIL tp-2 llama seed did not start"; fail=$((fail + 1)); fi
stop "$out/r5"

# 6. fan-out over GPUs (issue 13): root on cuda:0, relay on cuda:1, then a client on cuda:0 sent to the relay
if port=$(seed "$out/r6" --model-path "$model" --device cuda:0 --engine mooncake --protocol nvlink_intra \
    --token tok); then
  if relay=$(seed "$out/r6b" --load-format remote_instance --remote-instance-weight-loader-seed-instance-ip \
      127.0.0.1 --remote-instance-weight-loader-seed-instance-service-port "$port" --device cuda:1 \
      --engine mooncake --token tok --source-strategy tree --checksum sha256); then
    say "relay on cuda:1 serving at 127.0.0.1:$relay"
    # the root is busy with another client: the directory sends the next tree client to the ready relay
    python3 -c "import urllib.request as u; print(u.urlopen(u.Request('http://127.0.0.1:$port/v1/source?tp=0&strategy=tree&client=someone', headers={'Authorization': 'Bearer tok'})).read().decode())" >> "$log" 2>&1
    check "client on cuda:0 loads from the relay on cuda:1 (tree, nvlink_intra)" remote "$port" --engine mooncake \
      --token tok --source-strategy tree --device cuda:0 --checksum sha256 --report "$out/relay.json"
    check "  ... byte-exact" same "$out/relay.json"
    check "  ... and it came from the relay" python3 -c "
import json; s = json.load(open('$out/relay.json'))['source']; print(s); assert s.endswith('via 127.0.0.1:$relay'), s"
  else say "FAIL the relay on cuda:1 did not start"; fail=$((fail + 1)); fi
  stop "$out/r6b"
else say "FAIL root seed on cuda:0 did not start"; fail=$((fail + 1)); fi
stop "$out/r6"
say "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
