#!/bin/sh
# azd preprovision (POSIX): the app's secrets, made once and kept in the azd environment and Key Vault; who runs
# azd (PostgreSQL Entra administrator); this machine's public IP (PostgreSQL firewall). See shared/deploy/hooks.py.
set -eu
cd "$(dirname "$0")/../.."
. infra/hooks/deploy-venv.sh
"$PY" -m shared.deploy.hooks preprovision
