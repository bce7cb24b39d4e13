#!/usr/bin/env bash
# A real SLURM cluster on this one machine, for developing and testing `launcher`:
# munged, one slurmctld and two slurmd ("n1" on port 17001, "n2" on port 17002), partition "debug".
#
#   cluster/devcluster.sh start    install (apt) if needed, configure, start, wait until both nodes are idle
#   cluster/devcluster.sh stop     stop the slurmd's, slurmctld and munged
#   cluster/devcluster.sh status   say which daemons run, print sinfo; exit 0 if all are up, 1 otherwise
#
# Needs root (exit 3 otherwise) and Debian/Ubuntu apt for the install (exit 4 if that is impossible).
# Daemons are started directly (containers often have no systemd). State, logs and a copy of the
# generated config live in $DEVCLUSTER_STATE (default /var/lib/launcher-devcluster); the daemons and
# the clients read /etc/slurm/slurm.conf and /etc/slurm/cgroup.conf, which `start` writes.
# Environment: DEVCLUSTER_STATE, DEVCLUSTER_TIMEOUT (seconds to wait for idle nodes, default 90).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATES="$HERE/dev"
STATE="${DEVCLUSTER_STATE:-/var/lib/launcher-devcluster}"
TIMEOUT="${DEVCLUSTER_TIMEOUT:-90}"
ETC=/etc/slurm
NODES=(n1 n2)
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurmctld.pid
# The hash of the configuration the running slurm daemons were started with. In /run, not in the
# state folder: there is one /etc/slurm, hence one cluster per machine, whatever DEVCLUSTER_STATE is.
RUNNING_SHA=/run/launcher-devcluster.sha256

say() { echo "devcluster: $*"; }
die() {
    local code="$1"
    shift
    echo "devcluster: ERROR: $*" >&2
    exit "$code"
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die 3 "must run as root (it installs packages, writes /etc/slurm and starts daemons); try: sudo $0 ${1:-start}"
}

# ---------------------------------------------------------------- processes
# pid_alive PID COMM [ARG]: PID is a live process named COMM (whose command line has ARG, if given).
pid_alive() {
    local pid="$1" comm="$2" arg="${3:-}"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    if [ -n "$arg" ]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- " $arg " || return 1
    fi
    proc_running "$pid"
}

# proc_running PID: the process exists and is not a zombie.
proc_running() {
    [ -d "/proc/$1" ] && [ "$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" != "Z" ]
}

# find_pid PIDFILE COMM [ARG]: print the daemon's pid (from its pid file, else by scanning /proc).
find_pid() {
    local pidfile="$1" comm="$2" arg="${3:-}" pid
    if [ -r "$pidfile" ]; then
        pid="$(tr -dc '0-9' <"$pidfile")"
        if pid_alive "$pid" "$comm" "$arg"; then
            echo "$pid"
            return 0
        fi
    fi
    for dir in /proc/[0-9]*; do
        pid="${dir#/proc/}"
        if pid_alive "$pid" "$comm" "$arg"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

munged_pid() { find_pid "$MUNGE_PID" munged; }
slurmctld_pid() { find_pid "$CTLD_PID" slurmctld; }
slurmd_pid() { find_pid "/run/slurmd-$1.pid" slurmd "$1"; }

# stop_pid NAME PID: SIGTERM, wait up to 20 s, then SIGKILL.
stop_pid() {
    local name="$1" pid="$2" _
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        if ! proc_running "$pid"; then
            say "stopped $name (pid $pid)"
            return 0
        fi
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    say "killed $name (pid $pid): it did not stop within 20 s of SIGTERM"
}

stop_slurm() {
    local node pid
    for node in "${NODES[@]}"; do
        if pid="$(slurmd_pid "$node")"; then stop_pid "slurmd -N $node" "$pid"; fi
    done
    if pid="$(slurmctld_pid)"; then stop_pid slurmctld "$pid"; fi
    rm -f "$RUNNING_SHA"
}

stop_all() {
    local pid
    stop_slurm
    if pid="$(munged_pid)"; then stop_pid munged "$pid"; fi
}

# ---------------------------------------------------------------- install
have_binaries() {
    local b
    for b in munged munge unmunge slurmctld slurmd sinfo srun sbatch squeue scontrol; do
        command -v "$b" >/dev/null 2>&1 || return 1
    done
}

install_packages() {
    have_binaries && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die 4 "slurm/munge are not installed and there is no apt-get here; install slurm-wlm (22.05) and munge yourself"
    say "installing slurm-wlm and munge with apt-get (once; about 10-30 s)"
    local log="$STATE/log/apt.log"
    local lists
    lists="$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' 2>/dev/null | head -1)"
    if [ -z "$lists" ] || ! DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge >"$log" 2>&1; then
        say "running apt-get update first"
        DEBIAN_FRONTEND=noninteractive apt-get update >>"$log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge >>"$log" 2>&1 || {
            tail -n 15 "$log" >&2
            die 4 "could not install slurm-wlm and munge with apt-get (log: $log)"
        }
    fi
    have_binaries || die 4 "apt-get installed slurm-wlm and munge but their programs are missing from PATH ($PATH)"
}

# ---------------------------------------------------------------- config
node_topology() {
    # The real topology of this machine, as slurmd sees it, so that slurmd does not drain the node
    # for "Low socket*core*thread count". Both nodes advertise all the cores: with task/none no
    # process is bound, so a one-task-per-node step may use every core of the machine.
    local line
    line="$(slurmd -C 2>/dev/null | head -1 || true)"
    if [[ "$line" =~ (CPUs=[0-9]+\ Boards=[0-9]+\ SocketsPerBoard=[0-9]+\ CoresPerSocket=[0-9]+\ ThreadsPerCore=[0-9]+) ]]; then
        echo "${BASH_REMATCH[1]}"
    else
        echo "CPUs=$(nproc)"
    fi
}

node_memory_mb() {
    # Half of the machine per node (two nodes share it), minus nothing: slurmd only drains a node
    # whose configured RealMemory exceeds what it finds, and memory is not a consumable (CR_Core).
    local total_kb
    total_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    echo $((total_kb / 1024 / 2))
}

render() {
    local host="$1" template="$2"
    sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$STATE|g" \
        -e "s|@TOPOLOGY@|$(node_topology)|g" -e "s|@MEMORY@|$(node_memory_mb)|g" "$template"
}

write_config() {
    local host
    host="$(hostname -s)"
    mkdir -p "$STATE/slurmctld" "$STATE/log" "$ETC"
    render "$host" "$TEMPLATES/slurm.conf.in" >"$STATE/slurm.conf"
    render "$host" "$TEMPLATES/cgroup.conf.in" >"$STATE/cgroup.conf"
    local f
    for f in slurm.conf cgroup.conf; do
        if ! cmp -s "$STATE/$f" "$ETC/$f"; then
            if [ -f "$ETC/$f" ] && [ ! -f "$STATE/$f.orig" ] && ! grep -q 'devcluster.sh' "$ETC/$f"; then
                cp -p "$ETC/$f" "$STATE/$f.orig" # someone else's config: keep it
            fi
            cp "$STATE/$f" "$ETC/$f"
            chmod 644 "$ETC/$f"
        fi
    done
    config_sha="$(cat "$STATE/slurm.conf" "$STATE/cgroup.conf" | sha256sum | cut -d' ' -f1)"
}

hosts_entry() {
    # Node names must resolve. Append once; never rewrite /etc/hosts (it may be a bind mount).
    local node missing=0
    for node in "${NODES[@]}"; do
        awk -v n="$node" '$1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == n) found = 1 } END { exit !found }' /etc/hosts ||
            missing=1
    done
    if [ "$missing" -eq 1 ]; then
        echo "127.0.0.1 ${NODES[*]}" >>/etc/hosts
        say "added '127.0.0.1 ${NODES[*]}' to /etc/hosts"
    fi
}

# ---------------------------------------------------------------- start
start_munge() {
    if munged_pid >/dev/null; then return 0; fi
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s "$MUNGE_KEY" ]; then
        say "creating the munge key $MUNGE_KEY"
        mungekey --create --keyfile="$MUNGE_KEY" 2>/dev/null ||
            create-munge-key -f 2>/dev/null ||
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
    if id munge >/dev/null 2>&1; then
        chown munge:munge /etc/munge "$MUNGE_KEY" /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    fi
    chmod 700 /etc/munge
    chmod 600 "$MUNGE_KEY"
    # --force: run as root, and accept the directory permissions a container gives us.
    munged --force --log-file="$STATE/log/munged.log" >>"$STATE/log/munged.out" 2>&1 ||
        fail "munged did not start"
    local _
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && { say "started munged (pid $(munged_pid || echo '?'))"; return 0; }
        sleep 0.1
    done
    fail "munged started but 'munge -n | unmunge' fails"
}

start_slurm() {
    local pid node
    if ! slurmctld_pid >/dev/null; then
        slurmctld >>"$STATE/log/slurmctld.out" 2>&1 || fail "slurmctld did not start"
        say "started slurmctld (pid $(slurmctld_pid || echo '?'))"
    fi
    for node in "${NODES[@]}"; do
        if ! slurmd_pid "$node" >/dev/null; then
            mkdir -p "/var/spool/slurmd-$node"
            slurmd -N "$node" >>"$STATE/log/slurmd-$node.out" 2>&1 || fail "slurmd -N $node did not start"
            say "started slurmd -N $node (pid $(slurmd_pid "$node" || echo '?'))"
        fi
    done
    echo "$config_sha" >"$RUNNING_SHA"
}

show_logs() {
    local f
    for f in "$STATE"/log/munged.log "$STATE"/log/slurmctld.log "$STATE"/log/slurmd-n1.log "$STATE"/log/slurmd-n2.log "$STATE"/log/*.out; do
        [ -s "$f" ] || continue
        echo "----- tail of $f" >&2
        tail -n 15 "$f" >&2
    done
}

fail() {
    echo "devcluster: ERROR: $*" >&2
    show_logs
    exit 1
}

# wait_idle: until sinfo shows every node usable (idle, mix or alloc), resuming down/drained ones.
wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) last_resume=-100 states bad
    while :; do
        states="$(sinfo -h -N -p debug -o '%N %t' 2>/dev/null | sort -u || true)"
        bad="$(echo "$states" | awk 'NF == 2 && $2 !~ /^(idle|mix|mixed|alloc|allocated|comp|completing)$/')"
        if [ -n "$states" ] && [ -z "$bad" ] && [ "$(echo "$states" | wc -l)" -eq "${#NODES[@]}" ]; then
            return 0
        fi
        if echo "$bad" | grep -Eq ' (down|drain|drng|drained|fail|failg)'; then
            if [ $((SECONDS - last_resume)) -ge 5 ]; then
                scontrol update nodename="$(
                    IFS=,
                    echo "${NODES[*]}"
                )" state=resume >/dev/null 2>&1 || true
                last_resume=$SECONDS
            fi
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "devcluster: sinfo after ${TIMEOUT} s:" >&2
            sinfo -N -o '%N %t %E' >&2 || true
            fail "the nodes did not become idle within ${TIMEOUT} s"
        fi
        # Every daemon must still be alive while we wait.
        slurmctld_pid >/dev/null || fail "slurmctld died"
        for node in "${NODES[@]}"; do slurmd_pid "$node" >/dev/null || fail "slurmd -N $node died"; done
        sleep 0.5
    done
}

summary() {
    local nodes
    nodes="$(sinfo -h -N -p debug -o '%N=%t' | sort -u | tr '\n' ' ')"
    echo "devcluster: up: cluster launcher-dev, partition debug, nodes ${nodes% } ($(node_topology | sed 's/ Boards.*//'), RealMemory=$(node_memory_mb) MB each), state $STATE"
}

cmd_start() {
    need_root start
    mkdir -p "$STATE/log"
    install_packages
    write_config
    hosts_entry
    local running_sha=""
    [ -r "$RUNNING_SHA" ] && running_sha="$(cat "$RUNNING_SHA")"
    if slurmctld_pid >/dev/null || slurmd_pid n1 >/dev/null || slurmd_pid n2 >/dev/null; then
        if [ "$running_sha" != "$config_sha" ]; then
            say "the configuration changed (or was started by someone else): restarting the slurm daemons"
            stop_slurm
        fi
    fi
    start_munge
    start_slurm
    wait_idle
    summary
}

cmd_stop() {
    need_root stop
    stop_all
    say "stopped"
}

cmd_status() {
    local ok=0 pid node
    if pid="$(munged_pid)"; then echo "munged:        running (pid $pid)"; else echo "munged:        stopped"; ok=1; fi
    if pid="$(slurmctld_pid)"; then echo "slurmctld:     running (pid $pid)"; else echo "slurmctld:     stopped"; ok=1; fi
    for node in "${NODES[@]}"; do
        if pid="$(slurmd_pid "$node")"; then
            echo "slurmd -N $node: running (pid $pid)"
        else
            echo "slurmd -N $node: stopped"
            ok=1
        fi
    done
    if command -v sinfo >/dev/null 2>&1 && sinfo -N -o '%N %P %t %c %m %E' 2>/dev/null; then :; else
        echo "sinfo: no answer from slurmctld"
        ok=1
    fi
    if [ -r "$RUNNING_SHA" ] && [ -r "$ETC/slurm.conf" ] &&
        [ "$(cat "$ETC/slurm.conf" "$ETC/cgroup.conf" | sha256sum | cut -d' ' -f1)" != "$(cat "$RUNNING_SHA")" ]; then
        echo "note: the generated configuration differs from the running one; run: $0 start"
    fi
    return "$ok"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 {start|stop|status}" >&2
    exit 2
    ;;
esac
