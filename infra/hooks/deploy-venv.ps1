# Dot-sourced by the PowerShell hooks: a venv holding requirements.txt (.venv-deploy, rebuilt when requirements.txt
# changes), so the hooks and `tenantflow db migrate` run the app's own code. Sets $Py.
$venv = '.venv-deploy'
$stamp = Join-Path $venv 'requirements.txt'
$bin = if ($IsWindows -or $env:OS -eq 'Windows_NT') { Join-Path $venv 'Scripts' } else { Join-Path $venv 'bin' }
if (-not (Test-Path $stamp) -or ((Get-FileHash $stamp).Hash -ne (Get-FileHash 'requirements.txt').Hash)) {
    Write-Host "preparing $venv (requirements.txt)"
    if (Test-Path $venv) { Remove-Item -Recurse -Force $venv }
    $python = if ($env:PYTHON) { $env:PYTHON } elseif (Get-Command python3 -ErrorAction SilentlyContinue) { 'python3' } else { 'python' }
    & $python -m venv $venv
    if ($LASTEXITCODE -ne 0) { throw "could not create $venv with $python" }
    & (Join-Path $bin 'pip') install -q --disable-pip-version-check -r requirements.txt
    if ($LASTEXITCODE -ne 0) { throw "pip install -r requirements.txt failed" }
    Copy-Item 'requirements.txt' $stamp
}
$Py = Join-Path $bin 'python'
