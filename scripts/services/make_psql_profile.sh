#!/usr/bin/env bash
# An AiiDA production profile on PostgreSQL + RabbitMQ: role and database made with `su postgres` (no sudo here;
# `verdi presto --use-postgres` also needs an en_US.UTF-8 locale this image lacks), then `verdi profile setup`.
# Usage: AIIDA_PATH=... bash make_psql_profile.sh PROFILE DATABASE    (verdi on PATH); idempotent.
set -euo pipefail
profile=$1
database=$2
su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'aiida') THEN CREATE ROLE aiida LOGIN PASSWORD 'aiida'; END IF;
END $$;
SQL
su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='$database'\"" | grep -q 1 ||
    su postgres -c "createdb -O aiida -E UTF8 --lc-collate=C.UTF-8 --lc-ctype=C.UTF-8 -T template0 $database"
if ! verdi profile show "$profile" >/dev/null 2>&1; then
    verdi profile setup core.psql_dos -n -p "$profile" --email annpot@localhost --first-name aiida \
        --last-name annpot --institution none --broker core.rabbitmq --database-hostname localhost \
        --database-port 5432 --database-username aiida --database-password aiida --database-name "$database" \
        --repository-uri "file://$AIIDA_PATH/repository_$profile" >/dev/null
fi
verdi -p "$profile" config set runner.poll.interval 1 >/dev/null        # the default 60 s slows every step
verdi -p "$profile" config set warnings.rabbitmq_version False >/dev/null  # consumer_timeout is disabled
verdi -p "$profile" config set daemon.timeout 120 >/dev/null           # a busy 2-core machine answers slowly
verdi -p "$profile" computer show localhost >/dev/null 2>&1 || {
    verdi -p "$profile" computer setup -n --label localhost --hostname localhost --transport core.local \
        --scheduler core.direct --work-dir "$AIIDA_PATH/work" --mpiprocs-per-machine 1 >/dev/null
    verdi -p "$profile" computer configure core.local localhost -n --safe-interval 0 >/dev/null
}
