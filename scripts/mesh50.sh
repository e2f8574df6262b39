#!/usr/bin/env bash
# Measure meshes of p2p-agent processes on this machine (docs/performance.md,
# "A mesh of 50 nodes"): 5, 20 and 50 nodes by default, or the sizes given.
#   scripts/mesh50.sh            # 5 20 50
#   scripts/mesh50.sh 50         # only 50
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/p2p-agent
go build -o "$bin" ./cmd/p2p-agent
go build -o "$(dirname "$bin")/mesh" ./scripts/mesh
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(5 20 50)
for n in "${sizes[@]}"; do
  echo "== $n nodes"
  "$(dirname "$bin")/mesh" -bin "$bin" -n "$n" ${MESH_FLAGS:-}
done
