#!/usr/bin/env bash
# Multi-source benchmark on a simulated cluster (issue 23): how much faster a client loads when it reads from several
# sources at once, and what a source killed halfway costs it.
#
# One cluster (sim-cluster.sh, prefix wlm<pid>-, a free 10.x subnet): the root seed in h0 serving --model-path, K
# relays in h1..hK (each loads from the root by chain, checks, serves, and is listed ready in the root's directory),
# and the client in h(K+1). Every link is limited to --rate R each way, the client's to --client-rate (4R by default).
# Then, per repetition, three loads by the client (`weightloader load --load-format remote_instance --checksum
# sha256`, each a fresh process), the baselines in the same run:
#   one    --sources 1 (source-strategy star: the root alone)
#   multi  --sources K+1 (the root and the K relays)
#   kill   --sources K+1, and relay hK is killed (SIGKILL) once the client has received --kill-at of the checkpoint's
#          bytes (its eth0's received bytes, polled every 20 ms; the counter counts frames, 1514 bytes for 1448 of
#          payload at MTU 1500, so the threshold is scaled by 1514/1448); before the next repetition it is started
#          again. The fraction of the payload the client had received when the relay was killed (its counter then,
#          less the frames' overhead) is recorded, and the ideal for that fraction printed beside the target's
# Each load's time is its report's seconds (the load itself: manifest, transfer, checks; not the JVM's start). Every
# report's SHA-256 of every tensor must equal a local load's of the checkpoint (byte-exact). The machine's CPU use
# (/proc/stat) during each load is recorded: above 90% the figures are CPU-bound, not link-bound.
# Targets (issue 23): multi <= one / 3.5; kill <= 1.15 x multi. Ideal with S bytes, K+1 sources at R and the client at
# (K+1)R: one S/R, multi S/((K+1)R), kill at fraction f: f S/((K+1)R) + (1-f) S/(KR), i.e. 1.167 x multi for K = 3,
# f = 0.5.
#
# Usage: examples/scripts/multisource-bench.sh --weightloader PATH/bin/weightloader --model-path CKPT --out DIR
#            [--rate 250mbit] [--client-rate RATE] [--relays 3] [--repeat 1] [--segment-size 16MiB]
#            [--kill-at 0.5] [--timeout 300] [--prefix P] [--subnet S]
# Output: a table on stdout, DIR/multisource.json, every process's log and every report under DIR/. Needs root
# (network namespaces, tc). Every process it starts and its cluster are removed on exit (also on Ctrl-C).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sim="$here/sim-cluster.sh"
readonly PORT=7000 ENGINE_PORT=7001 TOKEN=bench-token READY_S=300 STOP_WAIT_S=10

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "multisource-bench: error: $*" >&2; exit 1; }

wl=""; model=""; out=""; rate=250mbit; client_rate=""; relays=3; repeat=1; segment=16MiB; kill_at=0.5
timeout_s=300; PREFIX="wlm$$-"; subnet=""
while [ $# -gt 0 ]; do
    case "$1" in
        --weightloader) wl="${2:?--weightloader needs a value}"; shift 2 ;;
        --model-path) model="${2:?--model-path needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
        --client-rate) client_rate="${2:?--client-rate needs a value}"; shift 2 ;;
        --relays) relays="${2:?--relays needs a value}"; shift 2 ;;
        --repeat) repeat="${2:?--repeat needs a value}"; shift 2 ;;
        --segment-size) segment="${2:?--segment-size needs a value}"; shift 2 ;;
        --kill-at) kill_at="${2:?--kill-at needs a value}"; shift 2 ;;
        --timeout) timeout_s="${2:?--timeout needs a value}"; shift 2 ;;
        --prefix) PREFIX="${2:?--prefix needs a value}"; shift 2 ;;
        --subnet) subnet="${2:?--subnet needs a value}"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "multisource-bench: error: unknown option '$1'" >&2; usage ;;
    esac
done
[ -n "$wl" ] && [ -n "$model" ] && [ -n "$out" ] || usage
[ -x "$wl" ] || die "--weightloader $wl is not an executable (the distribution's bin/weightloader)"
wl="$(cd "$(dirname "$wl")" && pwd)/$(basename "$wl")"
[ -e "$model" ] || die "--model-path $model does not exist"
model="$(cd "$(dirname "$model")" && pwd)/$(basename "$model")"
[[ "$relays" =~ ^[0-9]+$ ]] && [ "$relays" -ge 1 ] && [ "$relays" -le 16 ] || die "bad --relays '$relays': 1..16"
[[ "$repeat" =~ ^[0-9]+$ ]] && [ "$repeat" -ge 1 ] && [ "$repeat" -le 10 ] || die "bad --repeat '$repeat': 1..10"
[[ "$timeout_s" =~ ^[0-9]+$ ]] && [ "$timeout_s" -ge 1 ] || die "bad --timeout '$timeout_s' (seconds)"
[[ "$segment" =~ ^[0-9]+[A-Za-z]*$ ]] || die "bad --segment-size '$segment' (e.g. 16MiB)"
python3 -c 'import sys; f = float(sys.argv[1]); sys.exit(0 if 0 < f < 1 else 1)' "$kill_at" 2>/dev/null \
    || die "bad --kill-at '$kill_at': a fraction in (0, 1)"
[[ "$PREFIX" =~ ^[A-Za-z0-9_-]{1,32}$ ]] || die "bad --prefix '$PREFIX': letters, digits, '-' and '_' only (1-32)"
[ "$(id -u)" -eq 0 ] || die "needs root (it runs sim-cluster.sh: network namespaces, veths, tc)"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time): it measures the client's CPU"
for tool in ip tc python3 setsid; do command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"; done
rate_bps=$("$sim" rate-bytes "$rate")
if [ -z "$client_rate" ]; then client_rate="$((rate_bps * 8 * (relays + 1)))bit"; fi
client_bps=$("$sim" rate-bytes "$client_rate")
[ -n "$subnet" ] || subnet=$("$sim" free-subnet)
"$sim" addr 0 --subnet "$subnet" >/dev/null
export SIM_CLUSTER_PREFIX="$PREFIX" SIM_CLUSTER_SUBNET="$subnet"
client=$((relays + 1)); sources=$((relays + 1))

if [ -d "$model" ]; then
    ckpt_bytes=$(find "$model" -maxdepth 1 -name '*.safetensors' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
else
    ckpt_bytes=$(stat -c %s "$model")
fi
[ "$ckpt_bytes" -gt 0 ] || die "no *.safetensors bytes in $model"
mkdir -p "$out/logs" "$out/reports"
out="$(cd "$out" && pwd)"
printf 'weight-loader.backends.transfer_engine.segment-size = "%s"\n' "$segment" > "$out/client.conf"

# ---- processes and cleanup: every process starts in its own process group (setsid), stopped by group ---------
pgids=()
stop_group() {
    local pg="$1"
    kill -TERM -- "-$pg" 2>/dev/null || true
    for _ in $(seq 1 $((STOP_WAIT_S * 10))); do kill -0 -- "-$pg" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL -- "-$pg" 2>/dev/null || true
}
stop_all() {
    local pg
    [ ${#pgids[@]} -gt 0 ] || return 0
    for pg in "${pgids[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
    for pg in "${pgids[@]}"; do stop_group "$pg"; done
    pgids=()
}
cleanup() {
    local code=$?
    stop_all
    "$sim" down --prefix "$PREFIX" >/dev/null 2>&1 || echo "multisource-bench: run: $sim down --prefix $PREFIX" >&2
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

# wait_ready PID FILE WHAT: until FILE is written, bounded; dies naming the log when PID exits first
wait_ready() {
    local pid="$1" file="$2" what="$3" log="$4" code
    for _ in $(seq 1 $((READY_S * 20))); do
        [ -s "$file" ] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            code=0; wait "$pid" 2>/dev/null || code=$?
            die "$what exited with status $code before it was ready; its log ($log) ends: $(tail -5 "$log")"
        fi
        sleep 0.05
    done
    die "$what was not ready after ${READY_S} s; its log: $log"
}

relay_pid=(); relay_log=()
start_relay() { # start_relay I: relay in host hI, loads from the root by chain, ready once it serves everything checked
    local i="$1"
    rm -f "$out/relay$i.ready"
    relay_log[i]="$out/logs/relay$i-$(date +%s).log"
    start "$i" "${relay_log[i]}" "$wl" seed --load-format remote_instance \
        --remote-instance-weight-loader-seed-instance-ip "$("$sim" addr 0)" \
        --remote-instance-weight-loader-seed-instance-service-port "$PORT" \
        --host "$("$sim" addr "$i")" --port "$PORT" --engine builtin --engine-port "$ENGINE_PORT" --token "$TOKEN" \
        --allow-plain-token --source-strategy chain --checksum sha256 --ready-file "$out/relay$i.ready"
    relay_pid[i]=$started
}

# packets the client's switch port (what the client receives) dropped so far: its tbf's queue is full
port_drops() {
    local stats
    stats=$(ip netns exec "$PREFIX""sw" tc -s qdisc show dev "p$client")   # "Sent N bytes M pkt (dropped D, ..."
    sed -n 's/.*(dropped \([0-9]*\),.*/\1/p' <<< "$stats" | awk '{s += $1} END {print s + 0}'
}
cpu_sample() { awk '/^cpu /{busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}' /proc/stat; }
rx_bytes() { ip netns exec "$PREFIX""h$client" cat /sys/class/net/eth0/statistics/rx_bytes; }

# run_load NAME SOURCES KILL(0|1): one client load; writes reports/NAME.json and runs.tsv's line
run_load() {
    local name="$1" n="$2" kill="$3" log pid code c0 c1 rx0 rx d0 target killed="" killed_fraction="" t0 t1
    log="$out/logs/$name.log"
    local -a strat=(--source-strategy star)
    echo "multisource-bench: $name: --sources $n$([ "$kill" = 1 ] && echo ", relay h$relays killed at $kill_at of the bytes")" >&2
    rm -f "$out/reports/$name.json"
    read -r -a c0 <<< "$(cpu_sample)"
    rx0=$(rx_bytes)
    d0=$(port_drops)
    t0=$EPOCHREALTIME
    rm -f "$out/reports/$name.time"
    # /usr/bin/time: the client's own CPU seconds (user, system) beside the machine's
    start "$client" "$log" /usr/bin/time -f "%U %S %e" -o "$out/reports/$name.time" "$wl" load \
        --load-format remote_instance \
        --remote-instance-weight-loader-seed-instance-ip "$("$sim" addr 0)" \
        --remote-instance-weight-loader-seed-instance-service-port "$PORT" --token "$TOKEN" \
        "${strat[@]}" --sources "$n" --checksum sha256 --no-progress --verbose --config "$out/client.conf" \
        --report "$out/reports/$name.json"
    pid=$started
    if [ "$kill" = 1 ]; then
        target=$(python3 -c 'import sys; print(int(int(sys.argv[1]) + float(sys.argv[2]) * int(sys.argv[3]) * 1514 / 1448))' \
            "$rx0" "$kill_at" "$ckpt_bytes")
        for _ in $(seq 1 $((timeout_s * 50))); do
            kill -0 "$pid" 2>/dev/null || break
            rx=$(rx_bytes)
            if [ "$rx" -ge "$target" ]; then
                kill -KILL -- "-${relay_pid[relays]}" 2>/dev/null || true
                killed_fraction=$(python3 -c 'import sys; print(f"{(int(sys.argv[1]) - int(sys.argv[2])) * 1448 / 1514 / int(sys.argv[3]):.4f}")' \
                    "$rx" "$rx0" "$ckpt_bytes")
                killed=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.3f}")' \
                    "$EPOCHREALTIME" "$t0")
                break
            fi
            sleep 0.02
        done
    fi
    code=""
    for _ in $(seq 1 $((timeout_s * 20))); do
        if ! kill -0 "$pid" 2>/dev/null; then code=0; wait "$pid" 2>/dev/null || code=$?; break; fi
        sleep 0.05
    done
    if [ -z "$code" ]; then stop_group "$pid"; code="timeout"; fi
    t1=$EPOCHREALTIME
    read -r -a c1 <<< "$(cpu_sample)"
    cp /proc/loadavg "$out/reports/$name.loadavg"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$n" "$code" "$(( $(port_drops) - d0 ))" \
        "$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.3f}")' "$t1" "$t0")" \
        "$(python3 -c 'import sys; b = int(sys.argv[3]) - int(sys.argv[1]); t = int(sys.argv[4]) - int(sys.argv[2]); print(f"{b / t:.3f}" if t else "")' "${c0[0]}" "${c0[1]}" "${c1[0]}" "${c1[1]}")" \
        "$killed" "$killed_fraction" "$log" >> "$out/runs.tsv"
}

"$sim" down --stale wlm 2>&1 | grep -v 'removed 0 ' >&2 || true
echo "multisource-bench: checksums of $model from a local load" >&2
"$wl" load --model-path "$model" --checksum sha256 --no-progress --report "$out/reports/local.json" \
    > "$out/logs/local.log" 2>&1 || die "the local load of $model failed: $(tail -3 "$out/logs/local.log")"
echo "multisource-bench: cluster $PREFIX on $subnet.0.0/16: h0 root, h1..h$relays relays at $rate," \
    "h$client client at $client_rate" >&2
"$sim" up "$client" --rate "$rate" > "$out/logs/cluster.log" 2>&1 || die "sim-cluster up failed: $(tail -3 "$out/logs/cluster.log")"
"$sim" rate "$client" "$client_rate" >> "$out/logs/cluster.log" 2>&1 || die "sim-cluster rate failed"
start 0 "$out/logs/root.log" "$wl" seed --model-path "$model" --host "$("$sim" addr 0)" --port "$PORT" \
    --engine builtin --engine-port "$ENGINE_PORT" --token "$TOKEN" --allow-plain-token --ready-file "$out/root.ready"
wait_ready "$started" "$out/root.ready" "the root seed" "$out/logs/root.log"
t_relays=$EPOCHREALTIME
for i in $(seq 1 "$relays"); do start_relay "$i"; done
for i in $(seq 1 "$relays"); do wait_ready "${relay_pid[i]}" "$out/relay$i.ready" "relay h$i" "${relay_log[i]}"; done
echo "multisource-bench: $relays relay(s) ready after $(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.1f}")' "$EPOCHREALTIME" "$t_relays") s" >&2

: > "$out/runs.tsv"
for rep in $(seq 1 "$repeat"); do
    run_load "one-$rep" 1 0
    run_load "multi-$rep" "$sources" 0
    run_load "kill-$rep" "$sources" 1
    if [ "$rep" -lt "$repeat" ]; then
        stop_group "${relay_pid[relays]}"
        start_relay "$relays"
        wait_ready "${relay_pid[relays]}" "$out/relay$relays.ready" "relay h$relays (again)" "${relay_log[relays]}"
    fi
done
stop_all
"$sim" down --prefix "$PREFIX" >> "$out/logs/cluster.log" 2>&1

# ---- results ---------------------------------------------------------------------------------------------------
python3 - "$out" "$rate" "$rate_bps" "$client_rate" "$client_bps" "$ckpt_bytes" "$relays" "$kill_at" "$segment" \
    "$wl" "$model" <<'PY'
import json, os, sys
out, rate, bps, crate, cbps, S, K, f, segment, wl, model = sys.argv[1:12]
bps, cbps, S, K, f = int(bps), int(cbps), int(S), int(K), float(f)
local = {t["name"]: t["sha256"] for t in json.load(open(os.path.join(out, "reports", "local.json")))["tensors"]}
runs = []
for line in open(os.path.join(out, "runs.tsv")):
    name, n, code, drops, wall, cpu, killed, killed_fraction, log = line.rstrip("\n").split("\t")
    run = {"name": name, "sources": int(n), "exit": code, "wallSeconds": float(wall),
           "cpuBusy": float(cpu) if cpu else None, "killedAfterSeconds": float(killed) if killed else None,
           "killedAtFraction": float(killed_fraction) if killed_fraction else None,
           "clientPortDrops": int(drops),
           "loadAverage": None, "clientCpuSeconds": None, "clientCores": None, "ok": False, "errors": []}
    try:
        u, sy, el = open(os.path.join(out, "reports", name + ".time")).read().split()[-3:]
        run["clientCpuSeconds"] = round(float(u) + float(sy), 2)
        run["clientCores"] = round((float(u) + float(sy)) / float(el), 2) if float(el) > 0 else None
    except (OSError, ValueError):
        pass
    try:
        run["loadAverage"] = float(open(os.path.join(out, "reports", name + ".loadavg")).read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    path = os.path.join(out, "reports", name + ".json")
    if code != "0" or not os.path.exists(path):
        run["errors"].append(f"load exited {code}; log {log}: " + "".join(open(log, errors="replace").readlines()[-3:]))
    else:
        r = json.load(open(path))
        run["seconds"] = r["seconds"]
        run["transferSeconds"] = (r.get("phases") or {}).get("transfer")
        run["source"] = r["source"]
        run["sourcesReport"] = r.get("sources")
        wrong = [t["name"] for t in r["tensors"] if t.get("sha256") != local.get(t["name"])]
        run["byteExact"] = not wrong and len(r["tensors"]) == len(local)
        if not run["byteExact"]:
            run["errors"].append(f"{len(wrong)} tensor(s) differ from the local load, e.g. {wrong[:3]}")
        run["ok"] = run["byteExact"]
    runs.append(run)
ideal_one, ideal_multi = S / bps, S / ((K + 1) * bps)
ideal_kill = f * S / ((K + 1) * bps) + (1 - f) * S / (K * bps)
by = lambda p: [r for r in runs if r["name"].startswith(p) and r["ok"]]
best = lambda rs: min(r["seconds"] for r in rs) if rs else None
one, multi, kill = best(by("one-")), best(by("multi-")), best(by("kill-"))
pairs = []
reps = sorted({r["name"].split("-")[1] for r in runs})
for rep in reps:
    g = {r["name"].split("-")[0]: r for r in runs if r["name"].endswith("-" + rep) and r["ok"]}
    if "one" in g and "multi" in g:
        tr = lambda r: r["transferSeconds"] or r["seconds"]
        fk = g["kill"]["killedAtFraction"] if "kill" in g else None
        pairs.append({"rep": int(rep), "multiOverOne": round(g["multi"]["seconds"] / g["one"]["seconds"], 4),
                      "killedAtFraction": fk,
                      "idealKillOverMultiAtThatFraction": round(fk + (1 - fk) * (K + 1) / K, 4) if fk else None,
                      "killOverMulti": round(g["kill"]["seconds"] / g["multi"]["seconds"], 4) if "kill" in g else None,
                      "transferMultiOverOne": round(tr(g["multi"]) / tr(g["one"]), 4),
                      "transferKillOverMulti": round(tr(g["kill"]) / tr(g["multi"]), 4) if "kill" in g else None})
doc = {"rate": rate, "rateBytesPerSecond": bps, "clientRate": crate, "clientRateBytesPerSecond": cbps,
       "checkpointBytes": S, "relays": K, "sources": K + 1, "killAt": f, "segmentSize": segment,
       "weightloader": wl, "modelPath": model,
       "idealSeconds": {"one": ideal_one, "multi": ideal_multi, "kill": ideal_kill},
       "idealKillOverMulti": ideal_kill / ideal_multi, "perRepetition": pairs, "runs": runs,
       "targets": {"multiOverOne<=1/3.5": None, "killOverMulti<=1.15": None}}
if pairs:
    worst = max(p["multiOverOne"] for p in pairs)
    doc["targets"]["multiOverOne<=1/3.5"] = worst <= 1 / 3.5
    ks = [p["killOverMulti"] for p in pairs if p["killOverMulti"] is not None]
    if ks:
        doc["targets"]["killOverMulti<=1.15"] = max(ks) <= 1.15
json.dump(doc, open(os.path.join(out, "multisource.json"), "w"), indent=2)

print(f"multi-source on a simulated cluster: {S} bytes, {K} relays + the root at {rate} ({bps} B/s) each way, "
      f"the client at {crate} ({cbps} B/s); segment-size {segment}; relay h{K} killed at {f:.2f} of the bytes")
print("ideal: the checkpoint's bytes at the links' rates, as if every byte on a link were payload (Ethernet, IP and TCP"
      " headers alone take 66 of every 1514 bytes, so x ideal is at least 1.046)")
print("cpu: the machine's 2 cores busy during the load (every process, other users' too); client: the load process's"
      " CPU in cores (user + system over its wall time, JVM start included)")
print("drops: packets the client's switch port dropped during the load (its queue full)")
print(f"{'run':<9} {'sources':>7} {'seconds':>8} {'transfer':>8} {'ideal':>7} {'x ideal':>7} {'cpu':>5} {'client':>6} {'drops':>6}  {'exact':<5} per source (bytes kept, dropped)")
for r in runs:
    kind = r["name"].split("-")[0]
    ideal = {"one": ideal_one, "multi": ideal_multi, "kill": ideal_kill}[kind]
    if r["ok"]:
        per = "; ".join(f"{s['source']} {s['bytes']}" + (f" [{s['failure'].split(':')[0]} after {s['failedAfter']:.2f} s,"
                        f" {len(s['moved'])} segment(s) moved]" if s.get("failure") else "")
                        for s in (r["sourcesReport"] or []))
        print(f"{r['name']:<9} {r['sources']:>7} {r['seconds']:8.2f} {r['transferSeconds'] or 0:8.2f} {ideal:7.2f} "
              f"{r['seconds'] / ideal:7.2f} {(r['cpuBusy'] or 0) * 100:4.0f}% {r['clientCores'] or 0:6.2f}"
              f" {r['clientPortDrops']:6d}  {'yes':<5} {per}"
              + (f" (killed at {r['killedAfterSeconds']:.2f} s of the process, {r['killedAtFraction'] or 0:.3f}"
                 f" of the payload received)" if r["killedAfterSeconds"] else ""))
    else:
        print(f"{r['name']:<9} {r['sources']:>7}   FAILED: {'; '.join(r['errors'])}")
fmt3 = lambda v: "-" if v is None else format(v, ".3f")
for p in pairs:
    print(f"repetition {p['rep']}: multi / one = {p['multiOverOne']:.3f} (target <= {1 / 3.5:.3f}; transfer phases"
          f" {p['transferMultiOverOne']:.3f}), kill / multi = {fmt3(p['killOverMulti'])} (target <= 1.15; transfer"
          f" phases {fmt3(p['transferKillOverMulti'])}; killed at {fmt3(p['killedAtFraction'])} of the payload, where"
          f" the ideal is {fmt3(p['idealKillOverMultiAtThatFraction'])})")
print(f"targets: {doc['targets']}")
print(f"JSON: {os.path.join(out, 'multisource.json')}; logs: {os.path.join(out, 'logs')}/")
sys.exit(0 if all(r["ok"] for r in runs) and runs else 1)
PY
