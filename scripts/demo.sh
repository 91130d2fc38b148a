#!/usr/bin/env bash
# The main job on one machine: installs what is missing, builds, then runs memcached
# servers in three "zones", two memzone-controller replicas on a YAML topology file (started
# first, so the proxy finds them at once) and memzone-proxy in front of them. Ctrl-C stops
# everything it started.
#   MEMZONE_DEMO_PORT=11311 scripts/demo.sh      proxy port (default 11311)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh" packages  # the demo needs no Kubernetes tools
"$root/scripts/build.sh" release

proxy_port=${MEMZONE_DEMO_PORT:-11311}
base_port=${MEMZONE_DEMO_BACKEND_BASE:-21211}
grpc_port=${MEMZONE_DEMO_GRPC_PORT:-18000}
proxy_metrics_port=${MEMZONE_DEMO_METRICS_PORT:-19100}
controller_metrics_port=$((proxy_metrics_port + 1))
work=$(mktemp -d /tmp/memzone-demo.XXXXXX)
pids=()

stop_all() {
  local status=$?
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
  exit "$status"
}
trap stop_all INT TERM EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

zones=(zone-a zone-b zone-c)
declare -A zone_servers
port=$base_port
user_args=()
[[ $(id -u) -eq 0 ]] && user_args=(-u root)
for zone in "${zones[@]}"; do
  list=""
  for _ in 1 2; do
    if port_in_use "$port"; then echo "demo: port $port is taken (set MEMZONE_DEMO_BACKEND_BASE)" >&2; exit 1; fi
    memcached -l 127.0.0.1 -p "$port" -U 0 -m 64 "${user_args[@]}" &
    pids+=($!)
    list+="${list:+, }\"127.0.0.1:$port\""
    port=$((port + 1))
  done
  zone_servers[$zone]=$list
done

cat > "$work/topology.yaml" <<YAML
# memzone demo topology: one replicated pool over three zones, two servers each.
pools:
  - name: main
    zones:
      zone-a: [${zone_servers[zone-a]}]
      zone-b: [${zone_servers[zone-b]}]
      zone-c: [${zone_servers[zone-c]}]
    replication:
      writes: all-zones
      wait: local
      readFailover: [error, miss]
      repair: true
routes:
  - prefix: ""
    pool: main
timeouts: { connectMs: 200, requestMs: 250 }
YAML

controller="$root/build/controlplane/memzone-controller"
proxy="$root/build/proxy/memzone-proxy"
if [[ -x "$controller" ]]; then
  # Two controller replicas on the same file (they serve the same version), started and
  # listening before the proxy, which lists both and moves to the other if one goes away.
  for p in "$grpc_port" "$((grpc_port + 1))"; do
    if port_in_use "$p"; then echo "demo: port $p is taken (set MEMZONE_DEMO_GRPC_PORT)" >&2; exit 1; fi
  done
  "$controller" --source file --config "$work/topology.yaml" \
    --grpc-listen "127.0.0.1:$grpc_port" --metrics-listen "127.0.0.1:$controller_metrics_port" &
  pids+=($!)
  "$controller" --source file --config "$work/topology.yaml" --grpc-listen "127.0.0.1:$((grpc_port + 1))" &
  pids+=($!)
  for p in "$grpc_port" "$((grpc_port + 1))"; do
    for _ in $(seq 1 100); do port_in_use "$p" && break; sleep 0.1; done
    port_in_use "$p" || { echo "demo: controller on port $p did not start" >&2; exit 1; }
  done
  "$proxy" --listen "127.0.0.1:$proxy_port" --zone zone-a \
    --controller "127.0.0.1:$grpc_port,127.0.0.1:$((grpc_port + 1))" \
    --state-dir "$work/proxy-state" --metrics-listen "127.0.0.1:$proxy_metrics_port" &
  pids+=($!)
  source_note="two controllers on $work/topology.yaml (edit it: proxies pick up changes)"
else
  "$proxy" --listen "127.0.0.1:$proxy_port" --zone zone-a --config "$work/topology.yaml" &
  pids+=($!)
  source_note="static topology $work/topology.yaml (kill -HUP the proxy after editing)"
fi

for _ in $(seq 1 100); do port_in_use "$proxy_port" && break; sleep 0.1; done
port_in_use "$proxy_port" || { echo "demo: proxy did not start" >&2; exit 1; }

cat <<TXT

memzone demo is up.
  proxy (zone zone-a):  127.0.0.1:$proxy_port
  memcached zone-a:     ${zone_servers[zone-a]}
  memcached zone-b:     ${zone_servers[zone-b]}
  memcached zone-c:     ${zone_servers[zone-c]}
  topology:             $source_note

Try it (libmemcached-tools and python3-pymemcache are installed):
  /usr/bin/python3 -c "from pymemcache.client.base import Client; c = Client(('127.0.0.1', $proxy_port)); c.set('hello', 'world'); print(c.get('hello'))"
  memcstat --servers=127.0.0.1:$proxy_port | head
  for p in $((base_port + 2)) $((base_port + 3)); do memccat --servers=127.0.0.1:\$p hello; done   # the zone-b copy

Ctrl-C stops the demo.
TXT
wait -n "${pids[@]}" || true
echo "demo: a process exited; stopping the rest" >&2
