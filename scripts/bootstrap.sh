#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtualenv in .venv with the pinned dependencies.
#   bash scripts/bootstrap.sh            # Python packages
#   bash scripts/bootstrap.sh --data     # also Debian's FashionMNIST copy, for offline training
#   bash scripts/bootstrap.sh --test     # also what the tests drive: Debian's Chromium (the demo's browser tests)
#                                        # and Prometheus (promtool and a real scrape of the service)
# Idempotent: a second run only checks what is there. Debian packages need root or sudo; where they cannot
# be installed the script says so and goes on (training then tries torchvision's download, and the
# browser and Prometheus tests are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(command -v python3.11 || command -v python3)
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# torch and torchvision first and by exact version: on our machines they come from local disk.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

debian=() bare=()  # bare: without the packages Debian recommends
for flag in "$@"; do
    case $flag in
        --data) [[ -d /usr/share/datasets/fashion-mnist ]] || debian+=(dataset-fashion-mnist) ;;
        --test | --browser)
            [[ -x /usr/bin/chromium ]] || debian+=(chromium)
            [[ -x /usr/bin/prometheus ]] || bare+=(prometheus) ;;
        *) echo "unknown option $flag (use --data, --test)" >&2; exit 2 ;;
    esac
done
sudo=$([[ $(id -u) == 0 ]] || echo sudo)
apt_install() {  # apt_install [--no-install-recommends] PACKAGE...
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"; } \
        || echo "note: could not install ${*} from Debian; see the comment at the top of $0"
}
if (( ${#debian[@]} )); then apt_install "${debian[@]}"; fi
# Prometheus recommends SMART, IPMI and SNMP exporters, which the tests do not run.
if (( ${#bare[@]} )); then apt_install --no-install-recommends "${bare[@]}"; fi
