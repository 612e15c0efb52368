#!/bin/sh
# azd postprovision (POSIX): the app identity's PostgreSQL login (Entra, pgaadauth), then `tenantflow db migrate`
# as the owner. See shared/deploy/hooks.py.
set -eu
cd "$(dirname "$0")/../.."
. infra/hooks/deploy-venv.sh
"$PY" -m shared.deploy.hooks postprovision
