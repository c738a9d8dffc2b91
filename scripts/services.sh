#!/usr/bin/env bash
# Make sure RabbitMQ and PostgreSQL answer on localhost, the way the README promises:
#   1. reuse services already listening on 127.0.0.1:5672 and 127.0.0.1:5432;
#   2. otherwise `docker compose up` them when a Docker engine works;
#   3. otherwise, as root, start them from the OS packages (installing them if missing);
#   4. otherwise stop and say exactly what to do.
# `services.sh --rabbitmqctl` prints the command that reaches the broker's rabbitmqctl instead
# (least privilege provisioning, `make provision`): the local one, or the compose container's.
set -euo pipefail

AMQP_PORT=5672
PG_PORT=5432
here="$(cd "$(dirname "$0")/.." && pwd)"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port, name, seconds
  local i
  for ((i = 0; i < $3; i++)); do
    listening "$1" && return 0
    sleep 1
  done
  echo "services: $2 did not start listening on 127.0.0.1:$1 within $3 s" >&2
  return 1
}

say() { echo "services: $*"; }

if [ "${1:-}" = "--rabbitmqctl" ]; then
  if command -v rabbitmqctl >/dev/null 2>&1; then
    echo rabbitmqctl
  elif command -v docker >/dev/null 2>&1 && [ -n "$(docker compose -f "$here/compose.yaml" ps -q rabbitmq 2>/dev/null)" ]; then
    echo "docker compose -f $here/compose.yaml exec -T rabbitmq rabbitmqctl"
  else
    echo "services: no rabbitmqctl here and no compose rabbitmq container; set KABUTO_RABBITMQCTL" >&2
    echo rabbitmqctl
  fi
  exit 0
fi

if listening $AMQP_PORT && listening $PG_PORT; then
  say "reusing RabbitMQ on 127.0.0.1:$AMQP_PORT and PostgreSQL on 127.0.0.1:$PG_PORT"
  exit 0
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  say "starting RabbitMQ and PostgreSQL with docker compose"
  docker compose -f "$here/compose.yaml" up -d --wait rabbitmq postgres
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  cat >&2 <<MSG
services: RabbitMQ (127.0.0.1:$AMQP_PORT) or PostgreSQL (127.0.0.1:$PG_PORT) is not running,
there is no working Docker engine, and installing them needs root. Do one of:
  - start Docker, then run this again (it uses compose.yaml);
  - run this as root (sudo make …): it installs rabbitmq-server and postgresql from the OS packages;
  - start your own and point Kabuto at them: KABUTO_AMQP_URL=amqp://user:pass@host:5672/
    KABUTO_DATABASE_URL=postgresql://user@host:5432/kabuto
MSG
  exit 1
fi

apt_ready=
need() {  # install Debian packages once
  if [ -z "$apt_ready" ]; then
    apt-get update -qq
    apt_ready=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! listening $PG_PORT; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    say "installing PostgreSQL from the OS packages"
    need postgresql
    # A development cluster on this machine only: trust connections from loopback, as the
    # default KABUTO_DATABASE_URL (no password) expects.
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n 1)
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  wait_for $PG_PORT PostgreSQL 60
fi

if ! listening $AMQP_PORT; then
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    say "installing RabbitMQ from the OS packages"
    need rabbitmq-server
    # Kabuto's broker limits (max_message_size; docs/security.md), on the broker we installed only.
    mkdir -p /etc/rabbitmq/conf.d
    cp "$here/deploy/rabbitmq/20-kabuto.conf" /etc/rabbitmq/conf.d/
  fi
  # The broker runs as the rabbitmq user through su, which applies PAM limits: 1,024 open files
  # by default. A quorum queue holds files open and every connection is a socket, and a broker at
  # its limit accepts TCP but never answers the AMQP handshake (seen here with several test runs
  # at once). Give it room before it starts.
  if [ "$(id -u)" = 0 ] && [ -d /etc/security/limits.d ] && [ ! -e /etc/security/limits.d/rabbitmq.conf ]; then
    echo "rabbitmq - nofile 20000" > /etc/security/limits.d/rabbitmq.conf
  fi
  say "starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_for $AMQP_PORT RabbitMQ 120
fi
say "RabbitMQ and PostgreSQL are up"
