#!/usr/bin/env bash
# `make down`: stops everything `make up` started and leaves no process behind.
set -uo pipefail
dev="$(cd "$(dirname "$0")/.." && pwd)/.dev"
for name in operator emulator apiserver; do
  pidfile="$dev/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # Each was started with setsid, so its process group is its pid: stop the whole group.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
done
rm -f "$dev/env" "$dev/env.partial"
echo "down: stopped"
