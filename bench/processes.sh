# Process bookkeeping shared by bench/run.sh, bench/uring.sh and bench/profile.sh (sourced, not run).
# Every process started with `start_pinned` is stopped when the script exits.
# `start_pinned` expects $CPU (the core to pin to).

PIDS=()

# Stops PID $1: TERM, up to 5 s, then KILL.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a command pinned to $CPU in the background, output to $1; its PID goes to $STARTED.
start_pinned() {
    local logfile=$1
    shift
    taskset -c "$CPU" "$@" >"$logfile" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to $3 seconds (default 10) for port $2 on 127.0.0.1 to accept
# connections while PID $1 lives.
wait_port() {
    local pid=$1 port=$2 seconds=${3:-10} i
    for ((i = 0; i < seconds * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        port_open "$port" && return 0
        sleep 0.1
    done
    return 1
}
