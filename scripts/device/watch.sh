#!/usr/bin/env bash
# Watch the background runs for up to $1 seconds (returns early when all have finished).
set -uo pipefail
END=$(( $(date +%s) + ${1:-540} ))
while [ "$(date +%s)" -lt "$END" ]; do
  if ! pgrep -f "python3 -m classseg" > /dev/null; then echo "all runs finished"; break; fi
  sleep 30
done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
for f in /tmp/runs/*.log; do echo "== $f"; tail -c 600 "$f" | tr '\r' '\n' | tail -3; done
