#!/usr/bin/env bash
# A multi-node Ray cluster on one machine, with an S3-compatible endpoint beside it:
#   head   : no CPUs for trials (the driver and the dashboard live here), dashboard on :8265
#   worker1: 1 CPU, resource {"worker1": 1}      worker2: 1 CPU, resource {"worker2": 1}
#   moto   : S3 on 127.0.0.1:9000, bucket "metagan"
# Each node runs as `ray start --block` in the background, so stopping kills exactly the
# processes this script started (by the PIDs it recorded), never other Ray instances.
#
#   cluster/local_cluster.sh start     # prints the addresses and the env to use
#   cluster/local_cluster.sh status
#   cluster/local_cluster.sh stop
#   cluster/local_cluster.sh check-ports   # are the fixed ports below free? (start checks too)
# Settings: STATE (default .local-cluster), BIN (default .venv/bin), ports below.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${STATE:-.local-cluster}
BIN=${BIN:-.venv/bin}
HEAD_PORT=${HEAD_PORT:-6390}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
S3_PORT=${S3_PORT:-9000}
METRICS_PORT=${METRICS_PORT:-8080}       # head; workers take the next ports
WORKER_PORT_BASE=${WORKER_PORT_BASE:-20000}
HOST=127.0.0.1
# Jobs run `python -m metagan.cli ...` on the nodes: their python must be the project's.
export PATH="$(cd "$BIN" && pwd):$PATH"
# Ray 2.60 token authentication: every node and client of this cluster uses ~/.ray/auth_token.
export RAY_AUTH_MODE=token

start_node() {  # name, log, then ray start arguments
  local name=$1; shift
  nohup "$BIN/ray" start --block "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

wait_nodes() {  # n alive nodes
  for _ in $(seq 1 20); do
    n=$(timeout 30 "$BIN/python" -c '
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print(sum(1 for n in ray.nodes() if n["Alive"]))' "$HOST:$HEAD_PORT" 2>/dev/null || echo 0)
    [ "$n" -ge "$1" ] && return 0
    sleep 1
  done
  echo "cluster did not come up: see $STATE/*.log" >&2
  return 1
}

fixed_ports() {  # name=port for every port this cluster binds by number
  echo "HEAD_PORT=$HEAD_PORT DASHBOARD_PORT=$DASHBOARD_PORT S3_PORT=$S3_PORT"
  echo "METRICS_PORT=$METRICS_PORT METRICS_PORT+1=$((METRICS_PORT + 1)) METRICS_PORT+2=$((METRICS_PORT + 2))"
  for i in 0 1 2; do
    for k in 1 2 3 4 5; do echo "WORKER_PORT_BASE+$((i * 1000 + k))=$((WORKER_PORT_BASE + i * 1000 + k))"; done
  done
  echo "WORKER_PORT_BASE+6=$((WORKER_PORT_BASE + 6))"
}

check_ports_free() {  # one line naming the first port in use, before anything starts
  # shellcheck disable=SC2046
  "$BIN/python" - $(fixed_ports) <<'PY'
import socket, sys
for spec in sys.argv[1:]:
    name, port = spec.split("=")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
    try:
        s.bind(("0.0.0.0", int(port)))
        s.listen()
    except OSError:
        sys.exit(f"port {port} ({name}) is in use: another cluster, or one still stopping; "
                 f"stop it or set {name.split('+')[0]} to free ports")
    finally:
        s.close()
PY
}

descendants() {  # every process below a PID, depth first
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do echo "$child"; descendants "$child"; done
}

case "${1:-}" in
start)
  if [ -e "$STATE/head.pid" ]; then echo "already started ($STATE)"; exit 1; fi
  check_ports_free
  mkdir -p "$STATE"
  SOCKETS=$(mktemp -d /tmp/mg-sockets.XXXX)   # short paths: unix sockets allow ~100 bytes
  echo "$SOCKETS" >"$STATE/sockets"
  "$BIN/ray" get-auth-token --generate >/dev/null   # creates ~/.ray/auth_token if missing
  nohup "$BIN/moto_server" -H $HOST -p "$S3_PORT" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}
  export AWS_REGION=${AWS_REGION:-us-east-1} AWS_ENDPOINT_URL=http://$HOST:$S3_PORT
  start_node head --head --node-ip-address=$HOST --port="$HEAD_PORT" --num-cpus=0 \
    --include-dashboard=true --dashboard-host=$HOST --dashboard-port="$DASHBOARD_PORT" \
    --metrics-export-port="$METRICS_PORT" --node-manager-port=$((WORKER_PORT_BASE + 1)) \
    --object-manager-port=$((WORKER_PORT_BASE + 2)) --runtime-env-agent-port=$((WORKER_PORT_BASE + 3)) \
    --dashboard-agent-grpc-port=$((WORKER_PORT_BASE + 4)) \
    --dashboard-agent-listen-port=$((WORKER_PORT_BASE + 5)) --min-worker-port=$((WORKER_PORT_BASE + 100)) \
    --max-worker-port=$((WORKER_PORT_BASE + 999)) --temp-dir="$SOCKETS/head" \
    --ray-client-server-port=$((WORKER_PORT_BASE + 6))   # not Ray's fixed 10001: another head may hold it
  wait_nodes 1
  for i in 1 2; do
    base=$((WORKER_PORT_BASE + i * 1000))
    start_node "worker$i" --address="$HOST:$HEAD_PORT" --node-ip-address=$HOST --num-cpus=1 \
      --resources="{\"worker$i\": 1}" --node-manager-port=$((base + 1)) \
      --object-manager-port=$((base + 2)) --metrics-export-port=$((METRICS_PORT + i)) \
      --runtime-env-agent-port=$((base + 3)) --dashboard-agent-grpc-port=$((base + 4)) \
      --dashboard-agent-listen-port=$((base + 5)) --min-worker-port=$((base + 100)) \
      --max-worker-port=$((base + 999)) \
      --temp-dir="$SOCKETS/w$i"   # own session folder (sockets, logs) per node
    wait_nodes $((1 + i))
  done
  "$BIN/python" - <<PY
import boto3
boto3.client("s3", endpoint_url="$AWS_ENDPOINT_URL", region_name="$AWS_REGION").create_bucket(Bucket="metagan")
PY
  cat <<MSG
started: head + 2 workers, S3 at $AWS_ENDPOINT_URL (bucket metagan); state in $STATE
  export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=$AWS_REGION AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=...
  metagan submit search_spaces/demo.yaml --address http://$HOST:$DASHBOARD_PORT --storage s3://metagan/searches
  dashboard: http://$HOST:$DASHBOARD_PORT   metrics: http://$HOST:$METRICS_PORT/metrics (head), :$((METRICS_PORT + 1)), :$((METRICS_PORT + 2)) (workers)
MSG
  ;;
check-ports)
  check_ports_free && echo "every fixed port is free"
  ;;
status)
  for f in "$STATE"/*.pid; do
    [ -e "$f" ] || { echo "not started"; exit 0; }
    pid=$(cat "$f"); if kill -0 "$pid" 2>/dev/null; then s=running; else s=gone; fi
    echo "$(basename "$f" .pid): pid $pid $s"
  done
  ;;
stop)
  # Workers first, then the head, then S3: each by the PID recorded at start, with every
  # process below it (raylet, GCS, agents, workers), so that none still holds a port when
  # stop returns and a new start on the same ports works.
  for name in worker1 worker2 head moto; do
    f="$STATE/$name.pid"; [ -e "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      tree="$pid $(descendants "$pid" | tr '\n' ' ')"
      kill -TERM "$pid"
      for _ in $(seq 1 30); do
        alive=""; for p in $tree; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 1
      done
      for p in $alive; do kill -KILL "$p" 2>/dev/null || true; done  # still there after 30 s
    fi
    rm -f "$f"
  done
  [ -e "$STATE/sockets" ] && rm -rf "$(cat "$STATE/sockets")" "$STATE/sockets"
  # Ray remembers the last head it started; forget it so a later ray.init() starts afresh.
  current=/tmp/ray/ray_current_cluster
  if [ -e $current ] && grep -q ":$HEAD_PORT\$" $current; then rm -f $current; fi
  echo "stopped"
  ;;
*)
  echo "usage: $0 start|status|stop|check-ports" >&2; exit 2 ;;
esac
