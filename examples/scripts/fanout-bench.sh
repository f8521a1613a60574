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
# --directory etcd (issue 23): the sources are found in etcd instead of the root's in-process directory. A one-member
# etcd runs in h0's namespace (S.0.1:2379, its data under DIR; the root's link carries its few requests), the root lists
# itself there under the model id bench/fanout (--directory etcd://S.0.1:2379 --model-id bench/fanout), and every
# instance is started with those two flags and no root address: tree claims a free source in etcd, star reads from a
# random ready one, chain joins the chain kept in etcd. Every process gets registry.etcd.connect-timeout = 30s (a
# --config file): seventeen JVMs starting at once on a few cores can take longer than the default 5 s to make their
# first etcd request, before the clock starts. --kill-root K (etcd only) SIGKILLs the root once K instances are ready:
# the others must still come up from the relays (with the in-process directory the root is the directory, so nothing
# would).
#
# Ideals, with S = the checkpoint's bytes (its *.safetensors files) and B = RATE in bytes/s:
#   star  N*S/B    tree  ceil(log2(N+1))*S/B    chain  S/B + (N-1)*slice/B, slice = the largest tensor's bytes / 16
#
# Usage: examples/scripts/fanout-bench.sh --weightloader PATH/bin/weightloader --model-path CKPT --out DIR
#            [--n 2,4,8,16] [--strategies star,tree,chain] [--rate 1gbit] [--delay 0ms] [--timeout 300]
#            [--directory inprocess|etcd] [--kill-root K] [--etcd PATH] [--prefix P] [--subnet S]
# --etcd: the etcd binary (default $ETCD, else etcd on the path; Debian: apt-get install etcd-server).
# --prefix and --subnet (sim-cluster.sh's) default to this run's own; clusters that runs killed before cleaning up
# (prefix wlb<pid>- of a process gone) are removed first.
# Output: a table (N, strategy, seconds, ideal, ratio to the ideal, ratio to the one-instance time) on stdout,
# DIR/fanout.json, every process's log under DIR/logs/N<n>-<strategy>/. Needs root (network namespaces, tc).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sim="$here/sim-cluster.sh"
readonly PORT=7000 ENGINE_PORT=7001 TOKEN=bench-token ROOT_READY_S=120 STOP_WAIT_S=10 ETCD_PORT=2379 ETCD_READY_S=60
readonly MODEL_ID=bench/fanout

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "fanout-bench: error: $*" >&2; exit 1; }

wl=""; model=""; out=""; ns_list="2,4,8,16"; strategies="star,tree,chain"; rate=1gbit; delay=0ms; timeout_s=300
PREFIX="wlb$$-"; subnet=""; directory=inprocess; kill_root=0; etcd_bin="${ETCD:-}"
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
        --directory) directory="${2:?--directory needs a value}"; shift 2 ;;
        --kill-root) kill_root="${2:?--kill-root needs a value}"; shift 2 ;;
        --etcd) etcd_bin="${2:?--etcd needs a value}"; shift 2 ;;
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
[[ "$directory" =~ ^(inprocess|etcd)$ ]] || die "bad --directory '$directory' (inprocess, etcd)"
[[ "$kill_root" =~ ^[0-9]+$ ]] || die "bad --kill-root '$kill_root' (a count of ready instances)"
if [ "$kill_root" -gt 0 ]; then
    [ "$directory" = etcd ] || die "--kill-root needs --directory etcd: with the in-process directory the root is the" \
        "directory, and no instance could find a source once it is killed"
    for n in ${ns_list//,/ }; do
        [ "$kill_root" -lt "$n" ] || die "--kill-root $kill_root must be below every N in --n ($n): the rest load after it"
    done
fi
if [ "$directory" = etcd ]; then
    [ -n "$etcd_bin" ] || etcd_bin=$(command -v etcd || true)
    [ -n "$etcd_bin" ] && [ -x "$etcd_bin" ] || die "--directory etcd needs etcd (apt-get install etcd-server, or" \
        "--etcd PATH / ETCD=PATH)"
    command -v curl >/dev/null 2>&1 || die "curl is missing (it checks etcd's health)"
fi
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
pgids=(); etcd_pg=""
# stop_groups PGID...: TERM, a bounded wait, KILL
stop_groups() {
    local pg alive
    [ $# -gt 0 ] || return 0
    for pg in "$@"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
    for _ in $(seq 1 $((STOP_WAIT_S * 10))); do
        alive=0
        for pg in "$@"; do kill -0 -- "-$pg" 2>/dev/null && { alive=1; break; }; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pg in "$@"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
}
# every process of the run; etcd last, so that the seeds can leave it on their way out
stop_all() {
    local pg
    local -a seeds=()
    for pg in "${pgids[@]}"; do [ "$pg" = "$etcd_pg" ] || seeds+=("$pg"); done
    stop_groups "${seeds[@]}"
    [ -z "$etcd_pg" ] || stop_groups "$etcd_pg"
    pgids=(); etcd_pg=""
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
    local n="$1" strategy="$2" name="N$1-$2" rdir ldir root_pid i deadline pending code addr why ready killed=""
    local -a pids=() state=() when=() where=()
    [ "$directory" = inprocess ] || name="$name-etcd"
    [ "$kill_root" -eq 0 ] || [ "$n" -le "$kill_root" ] || name="$name-killroot$kill_root"
    rdir="$out/runs/$name"; ldir="$out/logs/$name"
    rm -rf "$rdir" "$ldir"; mkdir -p "$rdir" "$ldir"
    echo "fanout-bench: $name: $n instance(s), $strategy, $rate${delay:+, delay $delay}" >&2
    if ! "$sim" up "$n" --rate "$rate" ${delay:+--delay "$delay"} --prefix "$PREFIX" --subnet "$subnet" \
            > "$ldir/cluster.log" 2>&1; then
        printf 'cluster\tfailed\t\t%s\n' "sim-cluster up failed: $(tail -1 "$ldir/cluster.log")" > "$rdir/result.tsv"
        return 0
    fi
    if [ "$directory" = etcd ]; then
        # one etcd member in h0, its clients on h0's address; its peer port on h0's loopback
        local etcd_url="http://$("$sim" addr 0):$ETCD_PORT"
        start 0 "$ldir/etcd.log" "$etcd_bin" --name bench --data-dir "$rdir/etcd" \
            --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
            --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
            --initial-cluster bench=http://127.0.0.1:2380 --initial-cluster-state new
        etcd_pg=$started
        deadline=$(( $(date +%s) + ETCD_READY_S ))
        until ip netns exec "$PREFIX""h0" curl -sf --max-time 2 "$etcd_url/health" 2>/dev/null | grep -q true; do
            if ! kill -0 "$started" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
                printf 'root\tfailed\t\t%s\n' "etcd in h0 was not healthy within ${ETCD_READY_S} s (see $ldir/etcd.log)" \
                    > "$rdir/result.tsv"
                stop_all; "$sim" down --prefix "$PREFIX" >> "$ldir/cluster.log" 2>&1
                return 0
            fi
            sleep 0.1
        done
        echo "weight-loader.registry.etcd.connect-timeout = 30s" > "$rdir/etcd-client.conf"
        where=(--directory "etcd://$("$sim" addr 0):$ETCD_PORT" --model-id "$MODEL_ID" --config "$rdir/etcd-client.conf")
    fi
    start 0 "$ldir/root.log" "$wl" seed --model-path "$model" --host "$("$sim" addr 0)" --port "$PORT" \
        --engine builtin --engine-port "$ENGINE_PORT" --token "$TOKEN" --allow-plain-token \
        --ready-file "$rdir/root.ready" "${where[@]}"
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
        if [ "$directory" = etcd ]; then
            set -- "${where[@]}"    # the registry and the model id only: no root address
        else
            set -- --remote-instance-weight-loader-seed-instance-ip "$("$sim" addr 0)" \
                --remote-instance-weight-loader-seed-instance-service-port "$PORT"
        fi
        start "$i" "$ldir/h$i.log" "$wl" seed --load-format remote_instance "$@" \
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
        pending=0; ready=0
        for i in $(seq 1 "$n"); do
            [ "${state[i]}" = ready ] && ready=$((ready + 1))
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
        if [ "$kill_root" -gt 0 ] && [ "$n" -gt "$kill_root" ] && [ -z "$killed" ] && [ "$ready" -ge "$kill_root" ]; then
            # SIGKILL: no goodbye to etcd, no drain; its entry lives on until its lease ends
            kill -KILL -- "-$root_pid" 2>/dev/null || true
            killed=$EPOCHREALTIME
            echo "$killed" > "$rdir/root-killed"
            echo "fanout-bench: $name: root killed (SIGKILL) once $ready instance(s) were ready" >&2
        fi
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
echo "fanout-bench: clusters with prefix $PREFIX on $subnet.0.0/16; sources found in the $directory directory$( \
    [ "$kill_root" -eq 0 ] || echo "; the root killed once $kill_root instance(s) are ready")" >&2
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
    "$subnet" "$directory" "$kill_root" "${runs[@]}" <<'PY'
import json, math, os, sys
out, rate, bps, delay, S, largest, wl, model, timeout, subnet, directory, kill_root = sys.argv[1:13]
bps, S, largest, kill_root = int(bps), int(S), int(largest), int(kill_root)
runs = [r.split() for r in sys.argv[13:]]
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
    killed = kill_root > 0 and n > kill_root
    name = f"N{n}-{strategy}" + ("-etcd" if directory == "etcd" else "") + (f"-killroot{kill_root}" if killed else "")
    rdir, ldir = os.path.join(out, "runs", name), os.path.join(out, "logs", name)
    run = {"n": n, "strategy": strategy, "directory": directory, "ok": False, "seconds": None,
           "idealSeconds": ideal(n, strategy), "ratioToIdeal": None, "ratioToOne": None, "instances": [],
           "errors": [], "logs": ldir}
    launch = None
    if os.path.exists(os.path.join(rdir, "launch")):
        launch = float(open(os.path.join(rdir, "launch")).read())
    if killed:
        run["killRootAfterReady"] = kill_root
        k = os.path.join(rdir, "root-killed")
        run["rootKilledAfterSeconds"] = round(float(open(k).read()) - launch, 3) \
            if os.path.exists(k) and launch is not None else None
        if run["rootKilledAfterSeconds"] is None:
            run["errors"].append({"who": "run", "error": f"the root was never killed (fewer than {kill_root} ready)",
                                  "logTail": ""})
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

doc = {"directory": directory, "killRootAfterReady": kill_root, "rate": rate, "rateBytesPerSecond": bps,
       "delay": delay, "checkpointBytes": S, "largestTensorBytes": largest,
       "chainSliceBytes": slice_bytes, "timeoutSeconds": int(timeout), "weightloader": wl, "modelPath": model,
       "oneInstanceSeconds": one["seconds"] if one else None, "runs": results}
with open(os.path.join(out, "fanout.json"), "w") as f:
    json.dump(doc, f, indent=2)

print(f"fan-out on a simulated cluster: {S} bytes per instance, links {rate} ({bps} B/s) each way"
      + (f", delay {delay}" if delay not in ("0", "0ms") else "") + f"; sources from the {directory} directory"
      + (f"; the root SIGKILLed once {kill_root} instance(s) were ready" if kill_root else ""))
print(f"{'N':>4}  {'strategy':<8}  {'seconds':>9}  {'ideal':>8}  {'x ideal':>8}  {'x one':>7}  per instance (s)")
fmt = lambda v, spec: format(v, spec) if v is not None else "-"
for r in results:
    per = " ".join(f"{i['seconds']:.2f}" if i["ok"] else "FAIL" for i in r["instances"])
    print(f"{r['n']:>4}  {r['strategy']:<8}  {fmt(r['seconds'], '9.2f') if r['ok'] else 'FAILED':>9}  "
          f"{r['idealSeconds']:8.2f}  {fmt(r['ratioToIdeal'], '8.2f'):>8}  {fmt(r['ratioToOne'], '7.2f'):>7}  {per}")
    if r.get("rootKilledAfterSeconds") is not None:
        print(f"      root killed (SIGKILL) at {r['rootKilledAfterSeconds']:.2f} s, once {kill_root} instance(s) were ready")
    for e in r["errors"]:
        print(f"      {e['who']}: {e['error']}")
        for line in e["logTail"].strip().splitlines()[-5:]:
            print(f"        | {line}")
print(f"JSON: {os.path.join(out, 'fanout.json')}; logs: {os.path.join(out, 'logs')}/")
sys.exit(0 if all(r["ok"] for r in results) else 1)
PY
