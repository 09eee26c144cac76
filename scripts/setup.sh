#!/usr/bin/env bash
# Set up a development environment for weightspace in .venv, reproducibly and idempotently.
#
#   scripts/setup.sh            # Debian packages (as root) + .venv from requirements/lock.txt
#
# Debian packages: installed with apt-get when run as root; otherwise the exact command is
# printed and the script stops. Python packages: the exact pins of requirements/lock.txt,
# installed with --no-deps so that pip resolves nothing (two wheels pin old numpy and would
# otherwise fight the lock). Re-running is cheap: a stamp records the lock file's digest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
DEBIAN_PACKAGES=(espeak-ng flite dataset-fashion-mnist tuxpaint-stamps-default sonic-pi-samples fluidsynth fluid-soundfont-gm chromium chromium-driver wordnet-base fortunes fortunes-it)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: these Debian packages are missing: ${missing[*]}" >&2
        echo "setup: install them with:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

stamp=.venv/.weightspace-setup
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
# pip warns about every local package index that lacks a given package; keep the rest.
quiet_pip() {
    .venv/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
echo "setup: installing the pinned Python packages (requirements/lock.txt)"
quiet_pip --upgrade "pip>=24"
quiet_pip --no-deps -r requirements/lock.txt
quiet_pip --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "setup: done ($(du -sh .venv | cut -f1) in .venv)"
