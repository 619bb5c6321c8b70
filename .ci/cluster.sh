#!/usr/bin/env bash
# A real clustered broker (issue 20): three RabbitMQ nodes with the MQTT plugin on this one
# machine, joined with `rabbitmqctl join_cluster`, then the #[ignore]d tests of
# tests/cluster_rabbitmq.rs against them (which stop and start a node mid-drive). The cluster
# is always torn down, whatever happens: nothing keeps running after this script.
#
# Each node has its own name (gpsa1..3@localhost), AMQP, MQTT and distribution ports (free
# loopback ports), data and log directories under one temp dir; all share an Erlang cookie
# and an epmd on a port of their own (so neither a system epmd nor a system node matters).
# The tests find the cluster through GPS_AGENT_RABBITMQ_NODES (`name=host:mqtt_port`, one per
# node, space-separated) and GPS_AGENT_RABBITMQ_CTL (a rabbitmqctl with this cluster's
# environment); GPS_AGENT_RABBITMQ=1 makes a missing cluster a failure instead of a skip.
#
# Usage: .ci/cluster.sh [COMMAND...]: with a command, runs it beside the cluster instead of
# the tests (`bash .ci/cluster.sh bash` for a shell with the variables above set).
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-rabbitmq.sh
# The test binary and the agent first: a build must not eat into the cluster's timings.
if [ "$#" -eq 0 ]; then
    cargo test --locked --test cluster_rabbitmq --no-run
fi

bin=/usr/lib/rabbitmq/bin
names=(gpsa1 gpsa2 gpsa3)
work=$(mktemp -d -t gps-agent-cluster.XXXXXX)
ok=0
epmd_pid=""
wrapper_pids=()

teardown() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    # SIGTERM to each node's start script stops its VM gracefully; all three at once.
    for pid in "${wrapper_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    local deadline=$((SECONDS + 30))
    for pid in "${wrapper_pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    done
    # A VM that did not stop in time is killed; it said its pid in its pid file.
    for n in "${names[@]}"; do
        if [ -s "$work/$n/pid" ]; then
            pid=$(cat "$work/$n/pid")
            if kill -0 "$pid" 2>/dev/null; then
                echo "cluster: $n did not stop within 30 s of SIGTERM; killing it"
                kill -KILL "$pid" 2>/dev/null
            fi
        fi
    done
    for pid in "${wrapper_pids[@]}"; do wait "$pid" 2>/dev/null; done
    if [ -n "$epmd_pid" ]; then
        kill -TERM "$epmd_pid" 2>/dev/null
        wait "$epmd_pid" 2>/dev/null
    fi
    if [ "$ok" -ne 1 ] || [ "$status" -ne 0 ]; then
        for n in "${names[@]}"; do
            echo "--- the last lines of $n's log:"
            tail -n 25 "$work/$n/log/$n@localhost.log" 2>/dev/null
            tail -n 10 "$work/$n/stdout" 2>/dev/null
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ten loopback ports nobody listens on now (as the tests' free_port: bound, then released):
# epmd, then AMQP, MQTT and distribution per node.
mapfile -t ports < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
for s in socks:
    print(s.getsockname()[1])
')
epmd_port=${ports[0]}
amqp=("${ports[@]:1:3}")
mqtt=("${ports[@]:4:3}")
dist=("${ports[@]:7:3}")

mkdir -p "$work/home"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/home/.erlang.cookie"
chmod 400 "$work/home/.erlang.cookie"

# What every Erlang VM of this cluster (nodes and CLI tools) shares. The CLI tools listen on
# an ephemeral distribution port (0), so concurrent calls never collide.
common=(
    HOME="$work/home"
    ERL_EPMD_PORT="$epmd_port"
    ERL_EPMD_ADDRESS=127.0.0.1
    # No such file: the system's /etc/rabbitmq/rabbitmq-env.conf is not read either.
    RABBITMQ_CONF_ENV_FILE="$work/none"
    RABBITMQ_CTL_DIST_PORT_MIN=0
    RABBITMQ_CTL_DIST_PORT_MAX=0
)
cat > "$work/rabbitmqctl" <<EOF
#!/bin/sh
exec env $(printf '%q ' "${common[@]}") $bin/rabbitmqctl "\$@"
EOF
chmod +x "$work/rabbitmqctl"
ctl() { "$work/rabbitmqctl" "$@"; }

# Node i's environment, for `env`.
node_env() {
    local i=$1 d="$work/${names[$1]}"
    printf '%s\n' "${common[@]}" \
        "RABBITMQ_NODENAME=${names[$i]}@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        "RABBITMQ_NODE_PORT=${amqp[$i]}" \
        "RABBITMQ_DIST_PORT=${dist[$i]}" \
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}" \
        "RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf" \
        "RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config" \
        "RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins" \
        "RABBITMQ_MNESIA_BASE=$d/mnesia" \
        "RABBITMQ_LOG_BASE=$d/log" \
        "RABBITMQ_PID_FILE=$d/pid"
}

# epmd in the foreground of a background job: its pid is ours to stop. It must listen before
# any Erlang VM of the cluster starts, or that VM starts a daemon of its own that outlives us.
env "${common[@]}" epmd -port "$epmd_port" -address 127.0.0.1 > "$work/epmd.log" 2>&1 &
epmd_pid=$!
until epmd -port "$epmd_port" -names > /dev/null 2>&1; do
    if ! kill -0 "$epmd_pid" 2>/dev/null; then
        echo "cluster: epmd did not start: $(cat "$work/epmd.log")"
        exit 1
    fi
    sleep 0.1
done

for i in 0 1 2; do
    d="$work/${names[$i]}"
    mkdir -p "$d/mnesia" "$d/log"
    cat > "$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:${amqp[$i]}
mqtt.listeners.tcp.default = 127.0.0.1:${mqtt[$i]}
mqtt.allow_anonymous = true
log.console = false
log.file.level = info
EOF
    echo "[]." > "$d/advanced.config"
    mapfile -t nenv < <(node_env "$i")
    env "${nenv[@]}" "$bin/rabbitmq-plugins" enable --offline rabbitmq_mqtt > "$d/plugins.log"
done

start=$SECONDS
for i in 0 1 2; do
    mapfile -t nenv < <(node_env "$i")
    # `env` execs the start script, so the pid is the script's: SIGTERM to it stops the VM
    # gracefully (rabbitmq-server's own trap).
    env "${nenv[@]}" "$bin/rabbitmq-server" > "$work/${names[$i]}/stdout" 2>&1 &
    wrapper_pids+=("$!")
done
for i in 0 1 2; do
    ctl -n "${names[$i]}@localhost" wait "$work/${names[$i]}/pid" --timeout 120 > /dev/null
done
echo "cluster: three nodes up after $((SECONDS - start)) s"

for i in 1 2; do
    node="${names[$i]}@localhost"
    ctl -n "$node" stop_app > /dev/null
    ctl -n "$node" join_cluster "${names[0]}@localhost" > /dev/null
    ctl -n "$node" start_app > /dev/null
done
running=$(ctl -n "${names[0]}@localhost" cluster_status --formatter json |
    python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin)["running_nodes"])))')
if [ "$running" != "gpsa1@localhost gpsa2@localhost gpsa3@localhost" ]; then
    echo "cluster: running nodes are [$running], not all three"
    exit 1
fi
for i in 0 1 2; do
    ctl -n "${names[$i]}@localhost" await_startup > /dev/null
    if ! python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5)' \
        "${mqtt[$i]}" 2>/dev/null; then
        echo "cluster: ${names[$i]}'s MQTT port ${mqtt[$i]} does not accept connections"
        exit 1
    fi
done
echo "cluster: joined and serving MQTT after $((SECONDS - start)) s" \
    "(MQTT ports ${mqtt[*]}, epmd $epmd_port)"

export GPS_AGENT_RABBITMQ=1
export GPS_AGENT_RABBITMQ_CTL="$work/rabbitmqctl"
GPS_AGENT_RABBITMQ_NODES=""
for i in 0 1 2; do
    GPS_AGENT_RABBITMQ_NODES+="${names[$i]}@localhost=127.0.0.1:${mqtt[$i]} "
done
export GPS_AGENT_RABBITMQ_NODES="${GPS_AGENT_RABBITMQ_NODES% }"

if [ "$#" -gt 0 ]; then
    "$@"
else
    cargo test --locked --test cluster_rabbitmq -- --ignored --nocapture
fi
ok=1
