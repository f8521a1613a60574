#!/usr/bin/env bash
# A simulated cluster on one machine (issue 13): N+1 hosts as network namespaces on a switch namespace, every link
# rate-limited with tc (and optionally delayed), each host able to run a real process (a seed, an instance).
#
#   ${P}sw            the switch: a Linux bridge br0 with one port per host (p0, p1, ...)
#   ${P}h0 .. ${P}hN  the hosts: eth0 = S.0.(i+1)/16 (S = the subnet, 10.77 by default: h0 = 10.77.0.1 is the
#                     root seed), lo up, no default route
#
# Each link is limited in both directions: the egress of eth0 in the host (what the host sends) and the egress of
# its port in the switch (what the host receives), with a tbf of RATE; with --delay, a netem delay of DELAY on the
# host's eth0 egress (so DELAY is the one-way latency between two hosts, the round trip 2 x DELAY).
# Traffic only flows between these namespaces: nothing is added to the root namespace (the veths are created
# directly inside the switch and host namespaces) and no host has a route out.
#
# Usage: examples/scripts/sim-cluster.sh up N [--rate RATE] [--delay DELAY] [--prefix P] [--subnet S]
#        examples/scripts/sim-cluster.sh down [--prefix P]
#        examples/scripts/sim-cluster.sh down --stale STEM     (clusters STEM<pid>...- whose process <pid> is gone)
#        examples/scripts/sim-cluster.sh rate I RATE [--delay DELAY] [--prefix P]   (host I's link, both ways)
#        examples/scripts/sim-cluster.sh exec I [--prefix P] -- CMD [ARGS...]
#        examples/scripts/sim-cluster.sh addr I [--subnet S]
#        examples/scripts/sim-cluster.sh selftest [--rate RATE] [--prefix P] [--subnet S]
#        examples/scripts/sim-cluster.sh free-subnet           (a 10.x subnet this machine does not use, for scripts)
#        examples/scripts/sim-cluster.sh rate-bytes RATE       (a tc rate in bytes per second, for scripts)
# Defaults: --prefix $SIM_CLUSTER_PREFIX or wl-, --subnet $SIM_CLUSTER_SUBNET or 10.77 (S is the first two octets of
# a /16), --rate 1gbit, no delay. RATE is a tc rate (100mbit, 1gbit, 10gbit, 50mbps, ...), DELAY a tc time (5ms,
# 200us). Clusters of different prefixes are independent: down removes only its prefix's namespaces (and with them
# their links), so runs side by side must use their own prefix. selftest uses its own by default, wlt<its pid>- on a
# free 10.x subnet, and first removes the clusters of selftests that died without cleaning up (down --stale wlt).
# up, down, exec and selftest need root (selftest prints "SKIP: reason" and exits 77 without).
set -euo pipefail

SUBNET="${SIM_CLUSTER_SUBNET:-10.77}"   # the /16 of the hosts' addresses (--subnet)
readonly MAX_HOSTS=253                  # h0..h253 = S.0.1 .. S.0.254

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "sim-cluster: error: $*" >&2; exit 1; }
need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (network namespaces, veths and tc); run it with sudo"
    command -v ip >/dev/null 2>&1 || die "ip (iproute2) is missing; install it: apt-get install -y iproute2"
    command -v tc >/dev/null 2>&1 || die "tc (iproute2) is missing; install it: apt-get install -y iproute2"
    ip netns list >/dev/null 2>&1 || die "ip netns is not available here: $(ip netns list 2>&1 | head -1)"
}
check_prefix() {
    [[ "$1" =~ ^[A-Za-z0-9_-]{1,32}$ ]] || die "bad --prefix '$1': letters, digits, '-' and '_' only (1-32)"
}
# output_has PATTERN CMD...: whether CMD's output has a line matching PATTERN (grep -E). Not `CMD | grep -q`: under
# pipefail that fails whenever grep exits at its match before CMD wrote its last line (CMD dies of SIGPIPE), which
# made checks fail about one time in five
output_has() {
    local pattern="$1" out; shift
    out=$("$@" 2>/dev/null) || return 1
    grep -qE -- "$pattern" <<< "$out"
}
check_subnet() {
    [[ "$1" =~ ^([0-9]{1,3})\.([0-9]{1,3})$ ]] && [ "${BASH_REMATCH[1]}" -le 255 ] && [ "${BASH_REMATCH[2]}" -le 255 ] \
        || die "bad --subnet '$1': the first two octets of a /16, e.g. 10.77"
}
check_index() {
    [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -le "$MAX_HOSTS" ] || die "bad host index '$1': 0..$MAX_HOSTS"
}

# addr I: S.0.(I+1)
addr_of() { check_index "$1"; echo "$SUBNET.0.$(($1 + 1))"; }

# free-subnet: a 10.x (x in 100..249) that no address or route of this namespace uses, picked at random so that
# clusters side by side rarely share one (sharing is harmless: each cluster's addresses live in its own namespaces)
free_subnet() {
    local used x
    used=$( { ip -o -4 addr show 2>/dev/null | awk '{print $4}'; ip -4 route show table all 2>/dev/null \
        | awk '{print ($1 == "local" || $1 == "broadcast") ? $2 : $1}'; } )
    for _ in $(seq 1 200); do
        x=$(( 100 + (RANDOM ^ $$) % 150 ))
        grep -q "^10\.$x\." <<< "$used" || { echo "10.$x"; return 0; }
    done
    die "no free subnet 10.100..10.249 here (every one has an address or a route)"
}

# rate-bytes RATE: a tc rate in bytes per second (tc's units: bit/kbit/mbit/gbit/tbit are bits per second,
# bps/kbps/mbps/gbps/tbps bytes per second; k = 1000; the binary kibit/mibit/gibit... also accepted).
rate_bytes() {
    local r="${1,,}" num unit mult
    [[ "$r" =~ ^([0-9]+(\.[0-9]+)?)([a-z]*)$ ]] || die "bad rate '$1' (e.g. 100mbit, 1gbit, 50mbps)"
    num=${BASH_REMATCH[1]}; unit=${BASH_REMATCH[3]}
    case "$unit" in
        ""|bit) mult="1/8" ;; kbit) mult="1000/8" ;; mbit) mult="1000**2/8" ;; gbit) mult="1000**3/8" ;;
        tbit) mult="1000**4/8" ;; kibit) mult="1024/8" ;; mibit) mult="1024**2/8" ;; gibit) mult="1024**3/8" ;;
        tibit) mult="1024**4/8" ;; bps) mult="1" ;; kbps) mult="1000" ;; mbps) mult="1000**2" ;;
        gbps) mult="1000**3" ;; tbps) mult="1000**4" ;; kibps) mult="1024" ;; mibps) mult="1024**2" ;;
        gibps) mult="1024**3" ;; tibps) mult="1024**4" ;;
        *) die "bad rate unit in '$1' (bit, kbit, mbit, gbit, tbit, bps, kbps, mbps, gbps, tbps)" ;;
    esac
    python3 -c "import sys; v = int(float(sys.argv[1]) * $mult); print(v) if v > 0 else sys.exit(1)" "$num" \
        || die "rate '$1' must be positive"
}

# The namespaces of a cluster: exactly ${P}sw and ${P}h<digits> (never another prefix's that merely starts alike).
cluster_namespaces() {
    local p="$1" name
    ip netns list 2>/dev/null | awk '{print $1}' | while read -r name; do
        if [ "$name" = "${p}sw" ] || [[ "$name" =~ ^${p}h[0-9]+$ ]]; then echo "$name"; fi
    done
}

# tc on one device: tbf of RATE (burst: 10 ms of the rate, at least 64 KiB so a GSO packet passes), after a netem
# delay when DELAY is given.
shape() {
    local ns="$1" dev="$2" rate="$3" delay="$4" bytes burst
    bytes=$(rate_bytes "$rate")
    burst=$((bytes / 100)); [ "$burst" -ge 65536 ] || burst=65536
    if [ -n "$delay" ]; then
        ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: netem delay "$delay" limit 100000
        ip netns exec "$ns" tc qdisc add dev "$dev" parent 1:1 handle 10: tbf rate "$rate" burst "$burst" latency 100ms
    else
        ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: tbf rate "$rate" burst "$burst" latency 100ms
    fi
}

cmd_down() {
    local p="$1" ns pid n=0
    need_root down
    check_prefix "$p"
    for ns in $(cluster_namespaces "$p"); do
        # processes a crashed run left in the namespace (they would keep it alive): TERM, a bounded wait, KILL
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
        for _ in $(seq 1 20); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
        n=$((n + 1))
    done
    if [ -n "$(cluster_namespaces "$p")" ]; then die "could not delete: $(cluster_namespaces "$p" | tr '\n' ' ')"; fi
    echo "sim-cluster: down: removed $n namespace(s) with prefix '$p'"
}

cmd_up() {
    local n="$1" rate="$2" delay="$3" p="$4" i ns ip
    need_root up
    check_prefix "$p"
    check_subnet "$SUBNET"
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$MAX_HOSTS" ] || die "bad N '$n': 1..$MAX_HOSTS"
    rate_bytes "$rate" >/dev/null
    if [ -n "$(cluster_namespaces "$p")" ]; then
        die "namespaces with prefix '$p' already exist ($(cluster_namespaces "$p" | head -3 | tr '\n' ' ')...); " \
            "remove them first: $0 down --prefix $p"
    fi
    # a failure (or a signal) half-way leaves nothing behind
    up_prefix="$p"
    trap 'up_abort' EXIT
    trap 'exit 130' INT; trap 'exit 143' TERM
    ip netns add "${p}sw"
    ip -n "${p}sw" link set lo up
    if [ -n "$delay" ] && ! ip netns exec "${p}sw" tc qdisc add dev lo root netem delay "$delay" 2>/dev/null; then
        die "--delay needs tc's netem qdisc, which this kernel lacks or rejects '$delay' for" \
            "($(ip netns exec "${p}sw" tc qdisc add dev lo root netem delay "$delay" 2>&1 | head -1));" \
            "a kernel with CONFIG_NET_SCH_NETEM (module sch_netem) is needed"
    fi
    [ -z "$delay" ] || ip netns exec "${p}sw" tc qdisc del dev lo root
    ip -n "${p}sw" link add br0 type bridge
    ip -n "${p}sw" link set br0 up
    for i in $(seq 0 "$n"); do
        ns="${p}h$i"; ip=$(addr_of "$i")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # created inside the switch namespace, its peer straight into the host's: never in the root namespace
        ip -n "${p}sw" link add "p$i" type veth peer name eth0 netns "$ns"
        ip -n "${p}sw" link set "p$i" master br0
        ip -n "${p}sw" link set "p$i" up
        ip -n "$ns" addr add "$ip/16" dev eth0
        ip -n "$ns" link set eth0 up
        shape "$ns" eth0 "$rate" "$delay"        # what host i sends
        shape "${p}sw" "p$i" "$rate" ""          # what host i receives
    done
    trap - EXIT INT TERM
    echo "sim-cluster: up: switch ${p}sw (bridge br0), hosts ${p}h0..${p}h$n on $SUBNET.0.0/16" \
        "(h0 = $(addr_of 0) .. h$n = $(addr_of "$n")), every link $rate each way${delay:+, one-way delay $delay}"
    for i in $(seq 0 "$n"); do echo "  ${p}h$i  eth0 $(addr_of "$i")/16  <-> ${p}sw p$i"; done
}

# rate I RATE: host I's link limited to RATE both ways from now on (its eth0 egress and its switch port's), the
# others unchanged: e.g. a client whose link is faster than its sources'. DELAY, when given, on its eth0 as in up.
cmd_rate() {
    local i="$1" rate="$2" delay="$3" p="$4"
    need_root rate
    check_prefix "$p"; check_index "$i"
    rate_bytes "$rate" >/dev/null
    output_has "^${p}h$i( |\$)" ip netns list || die "no host ${p}h$i (bring the cluster up first)"
    ip netns exec "${p}h$i" tc qdisc del dev eth0 root 2>/dev/null || true
    ip netns exec "${p}sw" tc qdisc del dev "p$i" root 2>/dev/null || true
    shape "${p}h$i" eth0 "$rate" "$delay"
    shape "${p}sw" "p$i" "$rate" ""
    echo "sim-cluster: rate: ${p}h$i ($(addr_of "$i")) now $rate each way${delay:+, one-way delay $delay}"
}

# down --stale STEM: every cluster STEM<pid>[a-z]*- whose process <pid> no longer runs (a run that was killed before
# it could clean up); the clusters of live runs are left alone
cmd_down_stale() {
    local stem="$1" name pid seen=" " p
    need_root down
    check_prefix "$stem"
    for name in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        if [[ "$name" =~ ^${stem}([0-9]+)([a-z]*)-(sw|h[0-9]+)$ ]]; then
            pid=${BASH_REMATCH[1]}; p="${stem}${pid}${BASH_REMATCH[2]}-"
            if [ ! -d "/proc/$pid" ] && [[ "$seen" != *" $p "* ]]; then
                seen+="$p "
                cmd_down "$p"
            fi
        fi
    done
}

up_abort() {
    local code=$?
    echo "sim-cluster: up failed; removing what it created" >&2
    cmd_down "$up_prefix" >&2 || true
    exit "$code"
}

cmd_exec() {
    local i="$1" p="$2"; shift 2
    need_root exec
    check_prefix "$p"; check_index "$i"
    [ $# -gt 0 ] || die "exec: no command after --"
    output_has "^${p}h$i( |\$)" ip netns list || die "no host ${p}h$i (bring the cluster up first)"
    exec ip netns exec "${p}h$i" "$@"
}

# ---- selftest ------------------------------------------------------------------------------------------------
st_fail=0
st_check() { # st_check DESCRIPTION OK(0/1) DETAIL
    if [ "$2" -eq 0 ]; then echo "  ok    $1${3:+: $3}"; else echo "  FAIL  $1${3:+: $3}"; st_fail=1; fi
}

cmd_selftest() {
    local rate="$1" p="$2" dir pids=() bytes size t0 out secs got ratio i code
    if [ "$(id -u)" -ne 0 ]; then echo "SKIP: selftest needs root (network namespaces, veths, tc)"; exit 77; fi
    for tool in ip tc python3 curl timeout; do
        command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool is missing"; exit 77; }
    done
    if ! ip netns list >/dev/null 2>&1; then echo "SKIP: ip netns is not available"; exit 77; fi
    # this run's own prefix and subnet: another selftest (or cluster) running beside it is never touched
    [ -n "$p" ] || p="wlt$$-"
    check_prefix "$p"
    [ -n "$SUBNET" ] || SUBNET=$(free_subnet)
    check_subnet "$SUBNET"
    cmd_down_stale wlt | grep -v 'removed 0 ' || true
    bytes=$(rate_bytes "$rate")
    # about 2 s of the rate, within 1 MiB .. 256 MiB (20 MB at 100mbit... 25 MB)
    size=$((bytes * 2)); [ "$size" -ge 1048576 ] || size=1048576; [ "$size" -le 268435456 ] || size=268435456
    if [ -n "$(cluster_namespaces "$p")" ]; then
        echo "sim-cluster: selftest: leftovers of an earlier run with prefix '$p'; removing them"
        cmd_down "$p"
    fi
    echo "sim-cluster: selftest at $rate ($bytes bytes/s), 3 hosts, prefix $p, subnet $SUBNET.0.0/16"
    cmd_up 2 "$rate" "" "$p" >/dev/null      # on a failure, up removes what it made and exits
    dir=$(mktemp -d /tmp/sim-cluster-selftest.XXXXXX)
    # shellcheck disable=SC2064  # the values are fixed now
    trap "st_cleanup '$p' '$dir'" EXIT
    trap 'exit 130' INT; trap 'exit 143' TERM

    # 1. hosts: address, no default route, the shaping in place
    for i in 0 1 2; do
        st_check "h$i has $(addr_of "$i") and no default route" \
            "$( { output_has " $(addr_of "$i")/16 " ip -n "${p}h$i" -o addr show dev eth0 \
                && [ -z "$(ip -n "${p}h$i" route show default)" ]; } && echo 0 || echo 1)"
    done
    st_check "tbf on h1 eth0 and on its switch port" \
        "$( { output_has tbf tc -n "${p}h1" qdisc show dev eth0 && output_has tbf tc -n "${p}sw" qdisc show dev p1; } \
            && echo 0 || echo 1)"

    # 2. TCP from h1 to h0 and h2: an HTTP server in h0 and in h2, bound to their $SUBNET addresses
    mkdir -p "$dir/www"
    echo hello > "$dir/www/hello.txt"
    head -c "$size" /dev/zero > "$dir/www/blob"
    for i in 0 2; do
        ip netns exec "${p}h$i" python3 -m http.server 8000 --bind "$(addr_of "$i")" --directory "$dir/www" \
            > "$dir/http-h$i.log" 2>&1 &
        pids+=($!)
    done
    echo "${pids[*]}" > "$dir/pids"
    for i in 0 2; do
        code=1
        for _ in $(seq 1 50); do   # at most ~10 s until the server answers
            if ip netns exec "${p}h1" curl -sf --max-time 1 -o /dev/null "http://$(addr_of "$i"):8000/hello.txt"; then
                code=0; break
            fi
            sleep 0.2
        done
        st_check "h1 reaches h$i over TCP (http://$(addr_of "$i"):8000)" "$code"
    done

    # 3. throughput of a bounded transfer h0 -> h1 against the configured rate
    out=$(ip netns exec "${p}h1" timeout 60 curl -sf --max-time 55 -o /dev/null \
        -w '%{size_download} %{time_total}' "http://$(addr_of 0):8000/blob" || echo "0 0")
    read -r got secs <<< "$out"
    if [ "$got" -eq "$size" ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)" "$secs"; then
        ratio=$(python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]) / int(sys.argv[3]):.3f}')" \
            "$got" "$secs" "$bytes")
        st_check "throughput within +-30% of $rate" \
            "$(python3 -c "import sys; sys.exit(0 if 0.7 <= float(sys.argv[1]) <= 1.3 else 1)" "$ratio" && echo 0 || echo 1)" \
            "$got bytes in ${secs} s = $(python3 -c "import sys; print(f'{int(sys.argv[1]) * 8 / float(sys.argv[2]) / 1e6:.1f}')" \
                "$got" "$secs") Mbit/s, $ratio x the configured rate"
    else
        st_check "bounded transfer h0 -> h1 ($size bytes)" 1 "got '$got' bytes in '$secs' s"
    fi

    # 4. isolation: the root namespace has no address or route into S.0.0/16, so it cannot reach
    #    S.0.1. Probed with a real connection only when the root namespace has no route at all for it (the
    #    connection then fails locally); with a default route a probe would leave this machine, so it is not sent.
    local leak=0 detail="" route
    output_has " $SUBNET\." ip -o addr show && { leak=1; detail="a $SUBNET address in the root namespace"; }
    if route=$(ip route get "$SUBNET.0.1" 2>&1); then
        if output_has "^$SUBNET\." ip route show; then leak=1; detail="a $SUBNET route in the root namespace: $route"; fi
        [ -n "$detail" ] || detail="no $SUBNET address or route here (root's route for it: ${route%% uid*}; not probed)"
    else
        if curl -s --max-time 2 -o /dev/null "http://$SUBNET.0.1:8000/hello.txt"; then
            leak=1; detail="the root namespace reached http://$SUBNET.0.1:8000"
        else
            detail="no route, and a connection from the root namespace failed"
        fi
    fi
    st_check "isolation: the root namespace cannot reach $SUBNET.0.1" "$leak" "$detail"

    if [ "$st_fail" -eq 0 ]; then echo "PASS sim-cluster selftest"; else echo "FAIL sim-cluster selftest"; fi
    return "$st_fail"
}

st_cleanup() {
    local code=$? p="$1" dir="$2" pid
    if [ -f "$dir/pids" ]; then
        for pid in $(cat "$dir/pids"); do kill -TERM "$pid" 2>/dev/null || true; done
        for _ in $(seq 1 20); do
            local alive=0
            for pid in $(cat "$dir/pids"); do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ "$alive" -eq 0 ] && break; sleep 0.1
        done
        for pid in $(cat "$dir/pids"); do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    cmd_down "$p" >/dev/null 2>&1 || echo "sim-cluster: selftest: cleanup of '$p' failed; run: $0 down --prefix $p" >&2
    rm -rf "$dir"
    if [ -n "$(cluster_namespaces "$p")" ]; then echo "FAIL: namespaces '$p*' remain" >&2; exit 1; fi
    exit "$code"
}

# ---- command line --------------------------------------------------------------------------------------------
[ $# -ge 1 ] || usage
sub="$1"; shift
prefix="${SIM_CLUSTER_PREFIX:-wl-}"; rate=1gbit; delay=""
case "$sub" in
    up)
        [ $# -ge 1 ] || usage
        n="$1"; shift
        while [ $# -gt 0 ]; do
            case "$1" in
                --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
                --delay) delay="${2:?--delay needs a value}"; shift 2 ;;
                --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
                --subnet) SUBNET="${2:?--subnet needs a value}"; shift 2 ;;
                *) die "up: unknown option '$1'" ;;
            esac
        done
        case "$delay" in 0|0ms|0us|0s) delay="" ;; esac
        cmd_up "$n" "$rate" "$delay" "$prefix" ;;
    down)
        stale=""
        while [ $# -gt 0 ]; do
            case "$1" in
                --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
                --stale) stale="${2:?--stale needs a value}"; shift 2 ;;
                *) die "down: unknown option '$1'" ;;
            esac
        done
        if [ -n "$stale" ]; then cmd_down_stale "$stale"; else cmd_down "$prefix"; fi ;;
    rate)
        [ $# -ge 2 ] || usage
        i="$1"; r="$2"; shift 2
        while [ $# -gt 0 ]; do
            case "$1" in
                --delay) delay="${2:?--delay needs a value}"; shift 2 ;;
                --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
                *) die "rate: unknown option '$1'" ;;
            esac
        done
        case "$delay" in 0|0ms|0us|0s) delay="" ;; esac
        cmd_rate "$i" "$r" "$delay" "$prefix" ;;
    exec)
        [ $# -ge 1 ] || usage
        i="$1"; shift
        while [ $# -gt 0 ]; do
            case "$1" in
                --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
                --) shift; break ;;
                *) die "exec: unknown option '$1' (the command goes after --)" ;;
            esac
        done
        cmd_exec "$i" "$prefix" "$@" ;;
    addr)
        [ $# -ge 1 ] || usage
        i="$1"; shift
        while [ $# -gt 0 ]; do
            case "$1" in --subnet) SUBNET="${2:?--subnet needs a value}"; shift 2 ;; *) die "addr: unknown option '$1'" ;; esac
        done
        check_subnet "$SUBNET"
        addr_of "$i" ;;
    free-subnet)
        [ $# -eq 0 ] || usage
        free_subnet ;;
    rate-bytes)
        [ $# -eq 1 ] || usage
        rate_bytes "$1" ;;
    selftest)
        # its own prefix and subnet unless given (not the variables: those name a cluster someone brought up)
        rate=100mbit; prefix=""; SUBNET=""
        while [ $# -gt 0 ]; do
            case "$1" in
                --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
                --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
                --subnet) SUBNET="${2:?--subnet needs a value}"; shift 2 ;;
                *) die "selftest: unknown option '$1'" ;;
            esac
        done
        cmd_selftest "$rate" "$prefix" ;;
    -h|--help|help) usage ;;
    *) echo "sim-cluster: error: unknown subcommand '$sub'" >&2; usage ;;
esac
