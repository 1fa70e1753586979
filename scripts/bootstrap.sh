#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtualenv in .venv with the pinned dependencies.
#   bash scripts/bootstrap.sh          # Python packages
#   bash scripts/bootstrap.sh --data   # also Debian's FashionMNIST copy, for offline training
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(command -v python3.11 || command -v python3)
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# torch and torchvision first and by exact version: on our machines they come from local disk.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

if [[ ${1:-} == --data && ! -d /usr/share/datasets/fashion-mnist ]]; then
    sudo=$([[ $(id -u) == 0 ]] || echo sudo)
    $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist \
        || echo "note: could not install dataset-fashion-mnist; training will try torchvision's download"
fi
