#!/usr/bin/env bash
# Remote `config.set` as the shipped unit runs the agent, on this machine for real:
# systemd/install.sh installs the binary, the service user (sysusers.d) and the configuration
# directory's owner and mode (tmpfiles.d) into the live root; then the agent runs as the
# unit has it (user gps-agent, umask 0077, /etc and /usr read-only but for the unit's
# ReadWritePaths, taken from the unit file itself) against a mosquitto of its own, and a
# `config.set` sent with mosquitto_pub must be answered ok and land in
# /etc/gps-agent/config.toml, with config.toml.previous beside it. Before this change the
# same request answered CMD_FAILED (read-only file system).
#
# No systemd runs here (CI's machines have none as PID 1), so the sandbox is rebuilt with a
# mount namespace (unshare) and setpriv: the parts of it that decide whether the agent can
# write its configuration. Needs root; changes the machine (a throwaway CI machine): it
# installs /usr/bin/gps-agent and the unit, and removes what it made of /etc/gps-agent and
# /var/lib/gps-agent when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "systemd-live: skipped (needs root)"
  exit 0
fi
bash .ci/install-mosquitto.sh
if ! command -v systemd-tmpfiles >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd
fi

bin="$PWD/target/release/gps-agent"
[ -x "$bin" ] || cargo build --release --locked
work=$(mktemp -d)
port=18873
health=18474
agent_pid=""
broker_pid=""
made_etc=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "$made_etc" ]; then rm -rf /etc/gps-agent /var/lib/gps-agent; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -e /etc/gps-agent ]; then
  echo "systemd-live: /etc/gps-agent exists on this machine; not touching it"
  exit 1
fi
made_etc=1

# The operator's file, written by root before the install, as on a gateway being set up.
mkdir -p /etc/gps-agent
cat > /etc/gps-agent/config.toml <<EOF
[device]
id = "live-truck"
[gnss]
source = "serial"
path = "/dev/ttyUSB9"
stuck_after_s = 10.0
[mqtt]
url = "mqtt://127.0.0.1:$port"
[health]
listen = "127.0.0.1:$health"
[commands]
enabled = true
confirm_s = 30.0
EOF
bash systemd/install.sh "$bin" >/dev/null

# What tmpfiles.d made of the directory and the file.
[ "$(stat -c '%U:%G %a' /etc/gps-agent)" = "root:gps-agent 770" ] \
  || { echo "systemd-live: /etc/gps-agent is $(stat -c '%U:%G %a' /etc/gps-agent)"; exit 1; }
[ "$(stat -c '%U:%G %a' /etc/gps-agent/config.toml)" = "root:gps-agent 640" ] \
  || { echo "systemd-live: config.toml is $(stat -c '%U:%G %a' /etc/gps-agent/config.toml)"; exit 1; }

# StateDirectory=gps-agent, StateDirectoryMode=0750: systemd makes it, owned by the user.
install -d -o gps-agent -g gps-agent -m 0750 /var/lib/gps-agent

cat > "$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
EOF
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
broker_pid=$!

# The unit's writable paths, read from the unit: everything else is read-only.
rw=$(sed -n 's/^ReadWritePaths=//p' systemd/gps-agent.service)
mounts="mount --bind /etc /etc && mount -o remount,bind,ro /etc /etc"
mounts="$mounts && mount --bind /usr /usr && mount -o remount,bind,ro /usr /usr"
for p in $rw; do mounts="$mounts && mount --bind $p $p && mount -o remount,bind,rw $p"; done
unshare -m --propagation private sh -c "$mounts && exec setpriv --reuid=gps-agent \
  --regid=gps-agent --init-groups sh -c 'umask 0077; exec /usr/bin/gps-agent run \
  --config /etc/gps-agent/config.toml'" > "$work/agent.log" 2>&1 &
agent_pid=$!

# The broker takes connections before anything asks it.
for _ in $(seq 1 100); do
  if mosquitto_pub -h 127.0.0.1 -p "$port" -t live/probe -m up 2>/dev/null; then break; fi
  sleep 0.1
done

expires=$(date -u -d '+10 min' +%Y-%m-%dT%H:%M:%SZ)
# Sends one request until its first answer comes (the agent subscribes once connected) and
# prints it; fails after about a minute.
ask() {
  local id="$1" json="$2" sub=""
  : > "$work/answer.$id"
  for _ in $(seq 1 120); do
    if [ -s "$work/answer.$id" ]; then break; fi
    if [ -z "$sub" ] || ! kill -0 "$sub" 2>/dev/null; then
      mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -t "fleet/live-truck/cmd/result" -C 1 -W 90 \
        > "$work/answer.$id" 2>/dev/null &
      sub=$!
      sleep 0.3
    fi
    mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "fleet/live-truck/cmd" -m "$json" || true
    sleep 0.5
    if ! kill -0 "$agent_pid" 2>/dev/null; then
      echo "systemd-live: the agent exited" >&2; cat "$work/agent.log" >&2; exit 1
    fi
  done
  if [ -n "$sub" ]; then kill "$sub" 2>/dev/null || true; fi
  cat "$work/answer.$id"
}

answer=$(ask p1 "{\"id\":\"p1\",\"cmd\":\"ping\",\"expires\":\"$expires\"}")
echo "ping: $answer"
case "$answer" in *'"id":"p1"'*'"ok":true'*) ;; *) echo "systemd-live: no ping answer"; cat "$work/agent.log"; exit 1 ;; esac

new=$(sed 's/^stuck_after_s = 10.0$/stuck_after_s = 12.0/' /etc/gps-agent/config.toml)
request=$(NEW="$new" EXP="$expires" python3 -c 'import json,os; print(json.dumps({"id":"s1","cmd":"config.set","args":{"toml":os.environ["NEW"]},"expires":os.environ["EXP"]}))')
answer=$(ask s1 "$request")
echo "config.set: $answer"
case "$answer" in
  *'"id":"s1"'*'"ok":true'*) ;;
  *) echo "systemd-live: config.set was not applied under the unit's sandbox"; cat "$work/agent.log"; exit 1 ;;
esac
grep -qx 'stuck_after_s = 12.0' /etc/gps-agent/config.toml \
  || { echo "systemd-live: config.toml does not hold the new file"; exit 1; }
grep -qx 'stuck_after_s = 10.0' /etc/gps-agent/config.toml.previous \
  || { echo "systemd-live: config.toml.previous does not hold the old file"; exit 1; }
echo "systemd-live: config.set under the unit's sandbox: answered ok, written, previous kept ($(stat -c '%U:%G %a' /etc/gps-agent/config.toml))"
