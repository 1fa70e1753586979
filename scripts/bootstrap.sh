#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtualenv in .venv with the pinned dependencies.
#   bash scripts/bootstrap.sh            # Python packages
#   bash scripts/bootstrap.sh --data     # also Debian's FashionMNIST copy, for offline training
#   bash scripts/bootstrap.sh --browser  # also Debian's Chromium, for the demo's browser tests
# Idempotent: a second run only checks what is there. Debian packages need root or sudo; where they cannot
# be installed the script says so and goes on (training then tries torchvision's download, and the
# browser tests are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(command -v python3.11 || command -v python3)
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# torch and torchvision first and by exact version: on our machines they come from local disk.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

debian=()
for flag in "$@"; do
    case $flag in
        --data) [[ -d /usr/share/datasets/fashion-mnist ]] || debian+=(dataset-fashion-mnist) ;;
        --browser) [[ -x /usr/bin/chromium ]] || debian+=(chromium) ;;
        *) echo "unknown option $flag (use --data, --browser)" >&2; exit 2 ;;
    esac
done
if (( ${#debian[@]} )); then
    sudo=$([[ $(id -u) == 0 ]] || echo sudo)
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${debian[@]}"; } \
        || echo "note: could not install ${debian[*]} from Debian; see the comment at the top of $0"
fi
