#!/usr/bin/env bash
# `make chaos`: the fault suite on private PostgreSQL (port 27432) and RabbitMQ (node
# kabuto-chaos@localhost, port 27672) that it starts here and always stops on the way out —
# never the shared services on 5432 and 5672, which it restarts and stops on purpose.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
cd "$here"
if [ "$(id -u)" -ne 0 ]; then
  echo "chaos: needs root, to run a private PostgreSQL cluster as the postgres user (runuser)" >&2
  exit 1
fi
stop() { "$python" -m chaos.services stop; }
trap stop EXIT
"$python" -m chaos.services start
"$python" -m chaos.run "$@" 2>&1 | tee var/chaos/report.txt
