#!/usr/bin/env bash
# Install (if missing) and start RabbitMQ and PostgreSQL on Debian 12 without systemd, as root; idempotent.
# RabbitMQ listens on 127.0.0.1 only, with the consumer timeout disabled (AiiDA processes run for days; RabbitMQ
# >= 3.8.15 would otherwise close a consumer's channel after 30 minutes without an ack).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v rabbitmq-server >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-upgrade rabbitmq-server postgresql >/dev/null
fi

mkdir -p /etc/rabbitmq
echo '[ {rabbit, [ {consumer_timeout, undefined} ]} ].' > /etc/rabbitmq/advanced.config
echo 'listeners.tcp.default = 127.0.0.1:5672' > /etc/rabbitmq/rabbitmq.conf
printf 'NODE_IP_ADDRESS=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\n' > /etc/rabbitmq/rabbitmq-env.conf
if ! rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
    rabbitmq-server -detached
    # 'rabbitmqctl await_startup' fails this early (the node is not registered with epmd yet): poll instead
    for _ in $(seq 1 120); do rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && break; sleep 0.5; done
fi
rabbitmq-diagnostics -q check_running

version=$(ls /etc/postgresql | sort -n | tail -1)
[ -d "/etc/postgresql/$version/main" ] || pg_createcluster "$version" main
pg_lsclusters -h | grep -q " main .*online" || pg_ctlcluster "$version" main start
for _ in $(seq 1 60); do pg_isready -q && break; sleep 0.5; done
pg_isready
