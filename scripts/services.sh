#!/usr/bin/env bash
# Starts / stops the real services the tests use, on 127.0.0.1 only:
#   PostgreSQL (a throwaway cluster owned by the `postgres` user) and Azurite (Azure Storage emulator, from npm).
# `up` writes .services/env with the connection settings the tests use, and local.settings.json for `func start`
# (shared/deploy/local_settings.py); `down` stops both and removes the data.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.services"
pgdata="/tmp/tenantflow-pg-$(echo "$PWD" | md5sum | cut -c1-8)"
# a port that is taken (another checkout's services, say) is replaced by free ones; .services/env records them
port_free() { ! (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
free_base() {  # a free port p such that p, p+1 and p+2 are free too
  for _ in $(seq 1 50); do
    local p=$(( 20000 + RANDOM % 30000 ))
    port_free "$p" && port_free $((p+1)) && port_free $((p+2)) && { echo "$p"; return; }
  done
  echo "no free ports found" >&2; exit 1
}
pgport="${TENANTFLOW_TEST_PG_PORT:-54329}"
azport="${TENANTFLOW_TEST_AZURITE_PORT:-10100}"

pgbin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"
  else dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"; fi
}

up() {
  mkdir -p "$root"
  down_quiet
  port_free "$pgport" || pgport=$(free_base)
  { port_free "$azport" && port_free $((azport+1)) && port_free $((azport+2)); } || azport=$(free_base)
  local bin; bin="$(pgbin)"
  rm -rf "$pgdata"; mkdir -p "$pgdata"; chown postgres:postgres "$pgdata"; chmod 700 "$pgdata"
  runuser -u postgres -- "$bin/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -c unix_socket_directories=$pgdata -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null
  # Azurite, pinned (3.35 is the newest that runs on Node 20) and installed from the repo's lock file.
  if [ ! -x scripts/azurite/node_modules/.bin/azurite ]; then
    (cd scripts/azurite && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  (cd "$root" && nohup "$OLDPWD/scripts/azurite/node_modules/.bin/azurite" --silent --skipApiVersionCheck --disableTelemetry \
    --inMemoryPersistence --extentMemoryLimit 512 --loose --blobHost 127.0.0.1 --blobPort $((azport)) --queueHost 127.0.0.1 \
    --queuePort $((azport+1)) --tableHost 127.0.0.1 --tablePort $((azport+2)) >"$root/azurite.log" 2>&1 &
   echo $! >"$root/azurite.pid")
  local ready=""
  for _ in $(seq 1 150); do
    if (echo >/dev/tcp/127.0.0.1/$((azport+2))) 2>/dev/null && (echo >/dev/tcp/127.0.0.1/$((azport+1))) 2>/dev/null; then
      ready=1; break
    fi
    sleep 0.2
  done
  if [ -z "$ready" ]; then echo "Azurite did not start:" >&2; cat "$root/azurite.log" >&2; exit 1; fi
  local key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
  cat >"$root/env" <<ENV
TENANTFLOW_TEST_POSTGRES_ADMIN_DSN='postgresql://postgres@127.0.0.1:$pgport/postgres'
TENANTFLOW_TEST_TABLE_CONNECTION='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$key;BlobEndpoint=http://127.0.0.1:$azport/devstoreaccount1;QueueEndpoint=http://127.0.0.1:$((azport+1))/devstoreaccount1;TableEndpoint=http://127.0.0.1:$((azport+2))/devstoreaccount1;'
ENV
  # a `tenantflow` database for `func start`, with the owner and app roles as deployed (local.settings.json)
  runuser -u postgres -- "$bin/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres -d postgres \
    -c "CREATE ROLE tenantflow_owner LOGIN NOSUPERUSER CREATEDB" \
    -c "CREATE ROLE tenantflow_app LOGIN NOSUPERUSER NOBYPASSRLS" \
    -c "CREATE DATABASE tenantflow OWNER tenantflow_owner" >/dev/null
  runuser -u postgres -- "$bin/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres -d tenantflow \
    -c "REVOKE ALL ON SCHEMA public FROM PUBLIC" -c "GRANT ALL ON SCHEMA public TO tenantflow_owner" >/dev/null
  local python=python3; [ -x .venv/bin/python ] && python=.venv/bin/python
  "$python" -m shared.deploy.local_settings --postgres-port "$pgport" --azurite-port "$azport"
  echo "services up: postgres 127.0.0.1:$pgport, azurite 127.0.0.1:$azport-$((azport+2))"
}

down_quiet() {
  # the recorded pid may be the subshell that started node; match this checkout's azurite by its path too
  if [ -f "$root/azurite.pid" ]; then kill "$(cat "$root/azurite.pid")" 2>/dev/null || true; rm -f "$root/azurite.pid"; fi
  pkill -f "$PWD/scripts/azurite/node_modules/.bin/azurite" 2>/dev/null || true
  if [ -f "$pgdata/postmaster.pid" ]; then runuser -u postgres -- "$(pgbin)/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true; fi
}

down() { down_quiet; rm -rf "$pgdata"; echo "services down"; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
