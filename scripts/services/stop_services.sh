#!/usr/bin/env bash
# Stop what scripts/services/start_postgres_rabbitmq.sh and scripts/cluster/start_local_cluster.sh started, by name:
# rabbitmq, postgresql, slurm, munge, the cluster's sshd. Idempotent: a service that is not running is skipped.
# Usage: stop_services.sh [rabbitmq] [postgresql] [slurm] [sshd]   (no argument: all of them)
set -uo pipefail
wanted=${*:-rabbitmq postgresql slurm sshd}
for service in $wanted; do
    case $service in
        rabbitmq)
            if rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then rabbitmqctl -q stop >/dev/null 2>&1; fi
            pkill -x epmd 2>/dev/null || true ;;
        postgresql)
            if command -v pg_lsclusters >/dev/null; then
                pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r version name; do
                    pg_ctlcluster "$version" "$name" stop
                done
            fi ;;
        slurm)
            pkill -x slurmctld 2>/dev/null; pkill -x slurmd 2>/dev/null; pkill -x munged 2>/dev/null; true ;;
        sshd)
            pkill -f sshd_localcluster 2>/dev/null || true ;;
        *) echo "unknown service $service" >&2; exit 2 ;;
    esac
done
exit 0
