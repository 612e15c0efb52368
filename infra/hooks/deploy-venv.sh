# Sourced by the POSIX hooks: a venv holding requirements.txt (.venv-deploy, rebuilt when requirements.txt changes),
# so the hooks and `tenantflow db migrate` run the app's own code. Sets PY.
venv=.venv-deploy
if [ ! -f "$venv/requirements.txt" ] || ! cmp -s requirements.txt "$venv/requirements.txt"; then
  echo "preparing $venv (requirements.txt)"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$venv/requirements.txt"
fi
PY="$venv/bin/python"
