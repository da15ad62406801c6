#!/usr/bin/env bash
# Starts the machine's PostgreSQL 15 (installed, stopped) and makes sure the test role exists.
# Tests create one throwaway database per test through this role (CREATEDB). Prints the URL.
set -euo pipefail
if command -v pg_ctlcluster >/dev/null 2>&1; then
  if ! pg_lsclusters -h 2>/dev/null | awk '$4 == "online"' | grep -q .; then
    pg_ctlcluster 15 main start >&2 || { echo "postgres: cannot start cluster 15/main" >&2; exit 1; }
  fi
else
  echo "postgres: pg_ctlcluster not found; install PostgreSQL 15 (apt-get install postgresql)" >&2
  exit 1
fi
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.2
done
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }
as_postgres "psql -q -v ON_ERROR_STOP=1 -c \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'purrify') THEN CREATE ROLE purrify LOGIN CREATEDB PASSWORD 'purrify'; END IF; END \\\$\\\$;\"" >&2
as_postgres "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname = 'purrify'\" | grep -q 1 || createdb -O purrify purrify" >&2
echo "postgres://purrify:purrify@127.0.0.1:5432/purrify"
