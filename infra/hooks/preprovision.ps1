# azd preprovision (PowerShell): same as preprovision.sh. See shared/deploy/hooks.py.
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '../..')
. ./infra/hooks/deploy-venv.ps1
& $Py -m shared.deploy.hooks preprovision
exit $LASTEXITCODE
