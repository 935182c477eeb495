#!/bin/sh
# Profiles one echo server under `wsloop-bench echo` load (the profiles of BENCHMARKS.md).
#
#   benches/profile.sh MODE SERVER [SIZE] [IN_FLIGHT]
#
# MODE      syscalls   perf stat: system calls per message and user/system CPU split
#           perf       perf record -e cpu-clock -g (kernel and user stacks), then a report of
#                      the top symbols, self and with children
#           callgrind  valgrind --tool=callgrind on the server (user space only), then
#                      callgrind_annotate; instructions per message = total / echoes
# SERVER    wsloop | raw-echo | fastwebsockets | tokio-tungstenite
# SIZE      payload bytes (default 16); IN_FLIGHT per connection (default 1); 100 connections.
#
# Build first: `cargo build --profile profiling` here (release code with debug info, into
# target/profiling/; the server and the load generator) and `cargo build --release` in
# benches/peers. The server runs on CPU 1 and the client on CPU 0 when taskset exists.
# Output goes to target/profile/. Only 127.0.0.1.
set -eu

mode=${1:?usage: profile.sh syscalls|perf|callgrind SERVER [SIZE] [IN_FLIGHT]}
server=${2:?server: wsloop, raw-echo, fastwebsockets or tokio-tungstenite}
size=${3:-16}
in_flight=${4:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
wsloop=$root/target/profiling/wsloop
wsloop_bench=$root/target/profiling/wsloop-bench
peers=$root/benches/peers/target/release
out=$root/target/profile
mkdir -p "$out"
tag=$server-$size-x$in_flight

case $server in
wsloop) cmd="$wsloop echo --listen 127.0.0.1:0 --log-level warn" ;;
raw-echo) cmd="$peers/raw-echo --mode frames" ;;
fastwebsockets) cmd="$peers/fastwebsockets-echo" ;;
tokio-tungstenite) cmd="$peers/tungstenite-echo" ;;
*) echo "unknown server $server" >&2; exit 2 ;;
esac

pin_server=""
pin_client=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin_server="taskset -c 1"
    pin_client="taskset -c 0"
fi

wrap=""
duration=8s
if [ "$mode" = callgrind ]; then
    wrap="valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.$tag.out"
    duration=4s
fi

# shellcheck disable=SC2086 # word splitting of the commands is intended
$pin_server $wrap $cmd >"$out/$tag.server.out" 2>"$out/$tag.server.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT INT TERM

port=""
for _ in $(seq 200); do
    port=$(grep -o '127\.0\.0\.1:[0-9]*' "$out/$tag.server.out" 2>/dev/null | head -n 1 | cut -d: -f2)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { echo "the server did not start: $(cat "$out/$tag.server.err")" >&2; exit 1; }

# shellcheck disable=SC2086
$pin_client "$wsloop_bench" echo --url "ws://127.0.0.1:$port/" --server-pid "$pid" \
    --connections 100 --in-flight "$in_flight" --size "$size" --duration "$duration" \
    --json >"$out/$tag.bench.json" 2>/dev/null &
bench=$!

events=raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read
events=$events,syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev
events=$events,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl

ticks() { awk '{ sub(/.*\) /, ""); split($0, f, " "); print f[12], f[13] }' "/proc/$pid/stat"; }

case $mode in
syscalls)
    # In the measured window (1 s warm-up after setup): 4 s of counting.
    sleep 2.5
    before=$(ticks)
    perf stat -x, -e "$events" -p "$pid" -- sleep 4 2>"$out/$tag.perfstat.csv"
    after=$(ticks)
    wait $bench
    rate=$(sed 's/.*"messages_per_s":\([0-9.e+]*\).*/\1/' "$out/$tag.bench.json")
    echo "$server, $size B x $in_flight in flight: $rate msg/s over the whole window"
    echo "$before $after $rate" | awk -v hz="$(getconf CLK_TCK)" '{
        m = $5 * 4; printf "  user %.2f us/msg, system %.2f us/msg (perf counting adds to both)\n",
        ($3 - $1) / hz * 1e6 / m, ($4 - $2) / hz * 1e6 / m }'
    awk -F, -v rate="$rate" '$1 ~ /^[0-9]/ && $1 > 0 { n = $3; sub(/.*sys_enter_?/, "", n);
        printf "  %-14s %.3f per message\n", (n == "" ? "all" : n), $1 / (rate * 4) }' \
        "$out/$tag.perfstat.csv"
    ;;
perf)
    sleep 2.5
    perf record -F 4999 -e cpu-clock -g -o "$out/perf.$tag.data" -p "$pid" -- sleep 3 \
        2>/dev/null
    wait $bench
    perf report -i "$out/perf.$tag.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep '%' | head -n 4
    perf report -i "$out/perf.$tag.data" --children --sort sym --stdio -g none 2>/dev/null |
        grep '%' | head -n 60
    ;;
callgrind)
    wait $bench
    kill -INT "$pid"
    sleep 1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echoes=$(sed 's/.*"checked":\([0-9]*\).*/\1/' "$out/$tag.bench.json")
    total=$(grep -m 1 '^totals:' "$out/callgrind.$tag.out" | awk '{ print $2 }')
    echo "$server, $size B x $in_flight: $total instructions for $echoes echoes:" \
        "$((total / echoes)) per message (user space, startup and handshakes included)"
    callgrind_annotate "$out/callgrind.$tag.out" 2>/dev/null | sed -n '/^Ir/,$p' | head -n 30
    ;;
*)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac
