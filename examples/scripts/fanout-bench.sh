#!/usr/bin/env bash
# Fan-out benchmark on a simulated cluster (issue 13): how long N new instances take to all be loaded, verified and
# serving when they start at once from one root seed, per source strategy, on links of a fixed rate.
#
# For each N and strategy: sim-cluster.sh up N (prefix wlb<pid>-, a free 10.x subnet S: this run's own, so runs side
# by side never remove each other's clusters); the root seed in h0 (S.0.1:7000) serving --model-path; once it is
# ready, all N instances, instance i in host hi (S.0.(i+1)), each
#   weightloader seed --load-format remote_instance ... --source-strategy STRATEGY --checksum sha256 --ready-file F
#       --start-when GO
# (it serves, registers with the root, waits for GO, then loads from the source the root assigns it, verifies and
# serves others; F is written once it is serving). GO is created once every instance waits for it (F.armed): the
# JVMs of N simulated hosts start on this machine's few cores, far slower than on N hosts, so the clock starts
# when all are up. The time of (N, strategy) is from GO until the last instance's ready file appears (polled every 50 ms,
# bounded by --timeout); an instance that exits first, or the timeout, is recorded as a failure with its log's tail.
# N=1 star runs first as the baseline "time of one".
#
# Ideals, with S = the checkpoint's bytes (its *.safetensors files) and B = RATE in bytes/s:
#   star  N*S/B    tree  ceil(log2(N+1))*S/B    chain  S/B + (N-1)*slice/B, slice = the largest tensor's bytes / 16
#
# Usage: examples/scripts/fanout-bench.sh --weightloader PATH/bin/weightloader --model-path CKPT --out DIR
#            [--n 2,4,8,16] [--strategies star,tree,chain] [--rate 1gbit] [--delay 0ms] [--timeout 300]
#            [--prefix P] [--subnet S]
# --prefix and --subnet (sim-cluster.sh's) default to this run's own; clusters that runs killed before cleaning up
# (prefix wlb<pid>- of a process gone) are removed first.
# Output: a table (N, strategy, seconds, ideal, ratio to the ideal, ratio to the one-instance time) on stdout,
# DIR/fanout.json, every process's log under DIR/logs/N<n>-<strategy>/. Needs root (network namespaces, tc).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sim="$here/sim-cluster.sh"
readonly PORT=7000 ENGINE_PORT=7001 TOKEN=bench-token ROOT_READY_S=120 STOP_WAIT_S=10

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "fanout-bench: error: $*" >&2; exit 1; }

wl=""; model=""; out=""; ns_list="2,4,8,16"; strategies="star,tree,chain"; rate=1gbit; delay=0ms; timeout_s=300
PREFIX="wlb$$-"; subnet=""
while [ $# -gt 0 ]; do
    case "$1" in
        --weightloader) wl="${2:?--weightloader needs a value}"; shift 2 ;;
        --model-path) model="${2:?--model-path needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --n) ns_list="${2:?--n needs a value}"; shift 2 ;;
        --strategies) strategies="${2:?--strategies needs a value}"; shift 2 ;;
        --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
        --delay) delay="${2:?--delay needs a value}"; shift 2 ;;
        --timeout) timeout_s="${2:?--timeout needs a value}"; shift 2 ;;
        --prefix) PREFIX="${2:?--prefix needs a value}"; shift 2 ;;
        --subnet) subnet="${2:?--subnet needs a value}"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "fanout-bench: error: unknown option '$1'" >&2; usage ;;
    esac
done
[ -n "$wl" ] && [ -n "$model" ] && [ -n "$out" ] || usage
[ -x "$wl" ] || die "--weightloader $wl is not an executable (the distribution's bin/weightloader)"
wl="$(cd "$(dirname "$wl")" && pwd)/$(basename "$wl")"
[ -e "$model" ] || die "--model-path $model does not exist"
model="$(cd "$(dirname "$model")" && pwd)/$(basename "$model")"
[[ "$ns_list" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "bad --n '$ns_list' (e.g. 2,4,8,16)"
for n in ${ns_list//,/ }; do [ "$n" -ge 1 ] && [ "$n" -le 253 ] || die "bad N $n in --n: 1..253"; done
[[ "$strategies" =~ ^(star|tree|chain)(,(star|tree|chain))*$ ]] || die "bad --strategies '$strategies' (star, tree, chain)"
[[ "$timeout_s" =~ ^[0-9]+$ ]] && [ "$timeout_s" -ge 1 ] || die "bad --timeout '$timeout_s' (seconds)"
[[ "$PREFIX" =~ ^[A-Za-z0-9_-]{1,32}$ ]] || die "bad --prefix '$PREFIX': letters, digits, '-' and '_' only (1-32)"
[ "$(id -u)" -eq 0 ] || die "needs root (it runs sim-cluster.sh: network namespaces, veths, tc)"
for tool in ip tc python3 setsid; do command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"; done
rate_bps=$("$sim" rate-bytes "$rate")
[ -n "$subnet" ] || subnet=$("$sim" free-subnet)
"$sim" addr 0 --subnet "$subnet" >/dev/null
# every sim-cluster.sh call of this run (up, addr, down) works on this run's cluster only
export SIM_CLUSTER_PREFIX="$PREFIX" SIM_CLUSTER_SUBNET="$subnet"

# S: the checkpoint's bytes; the largest tensor from `weightloader inspect --json` ({"tensors": [{"bytes"}...]})
if [ -d "$model" ]; then
    ckpt_bytes=$(find "$model" -maxdepth 1 -name '*.safetensors' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
else
    ckpt_bytes=$(stat -c %s "$model")
fi
[ "$ckpt_bytes" -gt 0 ] || die "no *.safetensors bytes in $model"
mkdir -p "$out/logs" "$out/runs"
out="$(cd "$out" && pwd)"
"$wl" inspect --json "$model" > "$out/inspect.json" 2> "$out/logs/inspect.log" \
    || die "$wl inspect --json $model failed: $(tail -3 "$out/logs/inspect.log")"
largest=$(python3 -c 'import json, sys; print(max(t["bytes"] for t in json.load(open(sys.argv[1]))["tensors"]))' \
    "$out/inspect.json") || die "cannot read the tensors of $out/inspect.json"

# ---- processes and cleanup: every process starts in its own process group (setsid), stopped by group ---------
pgids=()
stop_all() {
    local pg alive
    [ ${#pgids[@]} -gt 0 ] || return 0
    for pg in "${pgids[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
    for _ in $(seq 1 $((STOP_WAIT_S * 10))); do
        alive=0
        for pg in "${pgids[@]}"; do kill -0 -- "-$pg" 2>/dev/null && { alive=1; break; }; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pg in "${pgids[@]}"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
    pgids=()
}
cleanup() {
    local code=$?
    stop_all
    "$sim" down --prefix "$PREFIX" >/dev/null 2>&1 || echo "fanout-bench: run: $sim down --prefix $PREFIX" >&2
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start HOST_INDEX LOG CMD...: runs CMD in host h<i> in a new process group; its pid (= its group) in $started
start() {
    local i="$1" log="$2"; shift 2
    setsid ip netns exec "$PREFIX""h$i" "$@" > "$log" 2>&1 < /dev/null &
    started=$!
    pgids+=("$started")
}

# run_one N STRATEGY: one cluster, one root, N instances; writes runs/N<n>-<strategy>/result.tsv
run_one() {
    local n="$1" strategy="$2" name="N$1-$2" rdir ldir root_pid i deadline pending code addr why
    local -a pids=() state=() when=()
    rdir="$out/runs/$name"; ldir="$out/logs/$name"
    rm -rf "$rdir" "$ldir"; mkdir -p "$rdir" "$ldir"
    echo "fanout-bench: $name: $n instance(s), $strategy, $rate${delay:+, delay $delay}" >&2
    if ! "$sim" up "$n" --rate "$rate" ${delay:+--delay "$delay"} --prefix "$PREFIX" --subnet "$subnet" \
            > "$ldir/cluster.log" 2>&1; then
        printf 'cluster\tfailed\t\t%s\n' "sim-cluster up failed: $(tail -1 "$ldir/cluster.log")" > "$rdir/result.tsv"
        return 0
    fi
    start 0 "$ldir/root.log" "$wl" seed --model-path "$model" --host "$("$sim" addr 0)" --port "$PORT" \
        --engine builtin --engine-port "$ENGINE_PORT" --token "$TOKEN" --allow-plain-token \
        --ready-file "$rdir/root.ready"
    root_pid=$started
    deadline=$(( $(date +%s) + ROOT_READY_S ))
    while [ ! -s "$rdir/root.ready" ]; do
        if ! kill -0 "$root_pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            if kill -0 "$root_pid" 2>/dev/null; then
                why="was not ready after ${ROOT_READY_S} s"
            else
                code=0; wait "$root_pid" 2>/dev/null || code=$?
                why="exited with status $code before its ready file"
            fi
            printf 'root\tfailed\t\t%s\n' "the root seed $why (see $ldir/root.log)" > "$rdir/result.tsv"
            stop_all; "$sim" down --prefix "$PREFIX" >> "$ldir/cluster.log" 2>&1
            return 0
        fi
        sleep 0.05
    done

    # all N started, each waits (--start-when) once it serves and is registered: this box's few cores start N JVMs
    # far slower than N hosts would; the clock starts when every instance is up and they are released at once
    for i in $(seq 1 "$n"); do
        addr=$("$sim" addr "$i")
        start "$i" "$ldir/h$i.log" "$wl" seed --load-format remote_instance \
            --remote-instance-weight-loader-seed-instance-ip "$("$sim" addr 0)" \
            --remote-instance-weight-loader-seed-instance-service-port "$PORT" \
            --host "$addr" --port "$PORT" --engine builtin --engine-port "$ENGINE_PORT" --token "$TOKEN" \
            --allow-plain-token --source-strategy "$strategy" --checksum sha256 --ready-file "$rdir/$i.ready" \
            --start-when "$rdir/go"
        pids[i]=$started; state[i]=pending
    done
    deadline=$(( $(date +%s) + timeout_s ))
    for _ in $(seq 1 $((timeout_s * 20 + 20))); do
        pending=0
        for i in $(seq 1 "$n"); do
            [ -e "$rdir/$i.ready.armed" ] || { kill -0 "${pids[i]}" 2>/dev/null && pending=$((pending + 1)); }
        done
        [ "$pending" -eq 0 ] && break
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.05
    done
    echo "$EPOCHREALTIME" > "$rdir/launch"
    touch "$rdir/go"
    deadline=$(( $(date +%s) + timeout_s ))
    # bounded: at most timeout/50 ms polls (plus the time the checks take), and the deadline
    for _ in $(seq 1 $((timeout_s * 20 + 20))); do
        pending=0
        for i in $(seq 1 "$n"); do
            [ "${state[i]}" = pending ] || continue
            if [ -s "$rdir/$i.ready" ]; then
                state[i]=ready; when[i]=$EPOCHREALTIME
            elif ! kill -0 "${pids[i]}" 2>/dev/null; then
                code=0; wait "${pids[i]}" 2>/dev/null || code=$?
                state[i]="exited with status $code before its ready file"; when[i]=$EPOCHREALTIME
            else
                pending=$((pending + 1))
            fi
        done
        [ "$pending" -eq 0 ] && break
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.05
    done
    for i in $(seq 1 "$n"); do
        if [ "${state[i]}" = pending ]; then state[i]="not ready after the --timeout of ${timeout_s} s"; when[i]=""; fi
        if [ "${state[i]}" = ready ]; then
            printf '%s\tready\t%s\t\n' "$i" "${when[i]}"
        else
            printf '%s\tfailed\t%s\t%s\n' "$i" "${when[i]}" "${state[i]}"
        fi
    done > "$rdir/result.tsv"
    stop_all
    "$sim" down --prefix "$PREFIX" >> "$ldir/cluster.log" 2>&1
}

if [ -n "$("$sim" down --stale wlb 2>&1 | grep -v 'removed 0 ')" ]; then
    echo "fanout-bench: removed the leftovers of earlier runs that were killed (prefix wlb<pid>-)" >&2
fi
echo "fanout-bench: clusters with prefix $PREFIX on $subnet.0.0/16" >&2
case "$delay" in 0|0ms|0us|0s) delay="" ;; esac
runs=("1 star")
for n in ${ns_list//,/ }; do
    for s in ${strategies//,/ }; do [ "$n $s" = "1 star" ] || runs+=("$n $s"); done
done
for r in "${runs[@]}"; do
    # shellcheck disable=SC2086  # "N STRATEGY"
    run_one $r
done

# ---- results: a table and fanout.json -------------------------------------------------------------------------
python3 - "$out" "$rate" "$rate_bps" "${delay:-0ms}" "$ckpt_bytes" "$largest" "$wl" "$model" "$timeout_s" \
    "$subnet" "${runs[@]}" <<'PY'
import json, math, os, sys
out, rate, bps, delay, S, largest, wl, model, timeout, subnet = sys.argv[1:11]
bps, S, largest = int(bps), int(S), int(largest)
runs = [r.split() for r in sys.argv[11:]]
slice_bytes = largest / 16

def ideal(n, strategy):
    if strategy == "star":
        return n * S / bps
    if strategy == "tree":
        return math.ceil(math.log2(n + 1)) * S / bps
    return S / bps + (n - 1) * slice_bytes / bps

def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"

results = []
for n, strategy in runs:
    n = int(n)
    name = f"N{n}-{strategy}"
    rdir, ldir = os.path.join(out, "runs", name), os.path.join(out, "logs", name)
    run = {"n": n, "strategy": strategy, "ok": False, "seconds": None, "idealSeconds": ideal(n, strategy),
           "ratioToIdeal": None, "ratioToOne": None, "instances": [], "errors": [], "logs": ldir}
    launch = None
    if os.path.exists(os.path.join(rdir, "launch")):
        launch = float(open(os.path.join(rdir, "launch")).read())
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(rdir, "result.tsv"))] \
        if os.path.exists(os.path.join(rdir, "result.tsv")) else [["run", "failed", "", "no result (interrupted?)"]]
    for who, status, when, detail in rows:
        if who in ("cluster", "root", "run"):
            run["errors"].append({"who": who, "error": detail,
                                  "logTail": tail(os.path.join(ldir, ("root" if who == "root" else "cluster") + ".log"))})
            continue
        inst = {"instance": int(who), "host": f"{subnet}.0.{int(who) + 1}", "ok": status == "ready", "seconds": None}
        if status == "ready":
            polled = float(when) - launch
            # the ready file's mtime is when it was written; the poll saw it up to 50 ms later
            mtime = os.stat(os.path.join(rdir, f"{who}.ready")).st_mtime - launch
            inst["seconds"] = round(mtime if 0 <= mtime <= polled else polled, 3)
        else:
            inst["error"] = detail
            if when:
                inst["failedAfterSeconds"] = round(float(when) - launch, 3)
            inst["logTail"] = tail(os.path.join(ldir, f"h{who}.log"))
            run["errors"].append({"who": f"instance {who}", "error": detail, "logTail": inst["logTail"]})
        run["instances"].append(inst)
    if not run["errors"] and len(run["instances"]) == n:
        run["ok"] = True
        run["seconds"] = max(i["seconds"] for i in run["instances"])
        run["ratioToIdeal"] = round(run["seconds"] / run["idealSeconds"], 3)
    results.append(run)

one = next((r for r in results if r["n"] == 1 and r["strategy"] == "star" and r["ok"]), None)
for r in results:
    if r["ok"] and one:
        r["ratioToOne"] = round(r["seconds"] / one["seconds"], 3)
    r["idealSeconds"] = round(r["idealSeconds"], 3)

doc = {"rate": rate, "rateBytesPerSecond": bps, "delay": delay, "checkpointBytes": S, "largestTensorBytes": largest,
       "chainSliceBytes": slice_bytes, "timeoutSeconds": int(timeout), "weightloader": wl, "modelPath": model,
       "oneInstanceSeconds": one["seconds"] if one else None, "runs": results}
with open(os.path.join(out, "fanout.json"), "w") as f:
    json.dump(doc, f, indent=2)

print(f"fan-out on a simulated cluster: {S} bytes per instance, links {rate} ({bps} B/s) each way"
      + (f", delay {delay}" if delay not in ("0", "0ms") else ""))
print(f"{'N':>4}  {'strategy':<8}  {'seconds':>9}  {'ideal':>8}  {'x ideal':>8}  {'x one':>7}  per instance (s)")
fmt = lambda v, spec: format(v, spec) if v is not None else "-"
for r in results:
    per = " ".join(f"{i['seconds']:.2f}" if i["ok"] else "FAIL" for i in r["instances"])
    print(f"{r['n']:>4}  {r['strategy']:<8}  {fmt(r['seconds'], '9.2f') if r['ok'] else 'FAILED':>9}  "
          f"{r['idealSeconds']:8.2f}  {fmt(r['ratioToIdeal'], '8.2f'):>8}  {fmt(r['ratioToOne'], '7.2f'):>7}  {per}")
    for e in r["errors"]:
        print(f"      {e['who']}: {e['error']}")
        for line in e["logTail"].strip().splitlines()[-5:]:
            print(f"        | {line}")
print(f"JSON: {os.path.join(out, 'fanout.json')}; logs: {os.path.join(out, 'logs')}/")
sys.exit(0 if all(r["ok"] for r in results) else 1)
PY
