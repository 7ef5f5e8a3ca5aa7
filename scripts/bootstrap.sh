#!/usr/bin/env bash
# One-time, idempotent set-up of a fresh machine: system packages (graphviz, Fashion-MNIST; as root also
# openssh-server for tests/test_remote.py), the project virtualenv in .venv with the package installed editable,
# and the offline datasets.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q >/dev/null 2>&1 || true
  $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null
fi
# sshd for the `remote` training-service test (skipped without it): only as root, and never fatal
if [ "$(id -u)" = 0 ] && [ ! -x /usr/sbin/sshd ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server \
         >/dev/null 2>&1; } || echo "bootstrap: openssh-server not installed; tests/test_remote.py will be skipped" >&2
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# (re)install when something is missing, or when setuptools is outside pyproject.toml's range (no pkg_resources, or
# one that warns on every nnictl call, or peewee 4, whose playhouse lacks what nni.nas.benchmark imports)
if ! .venv/bin/python -W error::UserWarning -c "import nni_darts_ext, pytest, torchvision, pkg_resources, playhouse.sqlite_ext, ruff, importlinter" \
    >/dev/null 2>&1; then
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
fi
.venv/bin/python -m nni_darts_ext prepare-data >/dev/null
