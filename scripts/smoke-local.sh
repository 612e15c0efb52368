#!/usr/bin/env bash
# `make smoke` (and CI): `tenantflow smoke` against `tenantflow serve` in front of `tenantflow emulator`, on a throwaway
# SQLite store and free 127.0.0.1 ports. Both servers are started here and stopped by their pid on exit; every wait is
# bounded. Exit status: smoke's (0 only when every check passed).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${VENV:-.venv}/bin"
py="$bin/python"
work="$(mktemp -d)"
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # URL: up to 30 s for any HTTP answer
  "$py" - "$1" <<'PY'
import sys, time, urllib.error, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        break
    except urllib.error.HTTPError:
        break  # it answers
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"no answer from {sys.argv[1]} within 30 s")
        time.sleep(0.2)
PY
}
emulator_port="$(free_port)"
app_port="$(free_port)"
unset TENANTFLOW_QUEUE_CONNECTION TENANTFLOW_URL TENANTFLOW_FLOWS_DIR TENANTFLOW_POSTGRES_DSN || true
export TENANTFLOW_STORE=sqlite TENANTFLOW_SQLITE_PATH="$work/smoke.db" TENANTFLOW_ALLOWED_HOSTS=127.0.0.1
TENANTFLOW_OPERATOR_KEY="$("$py" -c 'import secrets; print(secrets.token_hex(32))')"
TENANTFLOW_ENCRYPTION_KEY="$("$py" -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
export TENANTFLOW_OPERATOR_KEY TENANTFLOW_ENCRYPTION_KEY
emulator_key="$("$py" -c 'import secrets; print(secrets.token_hex(16))')"
"$bin/tenantflow" emulator --port "$emulator_port" --api-key "$emulator_key" >"$work/emulator.log" 2>&1 &
pids+=($!)
"$bin/tenantflow" serve --port "$app_port" >"$work/serve.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$emulator_port/" || { cat "$work/emulator.log" >&2; exit 1; }
wait_for "http://127.0.0.1:$app_port/api/health" || { cat "$work/serve.log" >&2; exit 1; }
echo "smoke: tenantflow serve on :$app_port, emulator on :$emulator_port"
status=0
echo "$emulator_key" | timeout 120 "$bin/tenantflow" smoke --url "http://127.0.0.1:$app_port" \
  --endpoint "http://127.0.0.1:$emulator_port" --api-key-stdin || status=$?
[ "$status" -eq 0 ] || tail -20 "$work/serve.log" >&2
exit "$status"
