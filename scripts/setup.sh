#!/bin/bash
# One-command setup: the PyPI requirements, then Dassl.pytorch from its repository at a pinned commit
# (skipped when `import dassl` already works). Uses the interpreter named by PYTHON (default python3).
# Where GitHub cannot be reached, Dassl is left out with a warning: the unit tests still run, the
# integration tests are skipped.
# With --with-slurm (what CI uses) it also installs Debian's slurm-wlm and munge, for the launcher's SLURM test
# (scripts/slurm_localhost.sh starts a single-node cluster from them); as root, where apt-get is there.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DASSL_COMMIT=c61a1b570ac6333bd50fb5ae06aea59002fb20bb
DASSL_URL=${DASSL_URL:-https://github.com/KaiyangZhou/Dassl.pytorch}

"$PYTHON" -m pip install -q -r requirements.txt || { echo "setup: installing requirements.txt failed" >&2; exit 1; }

if [ "${1:-}" = --with-slurm ]; then
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        echo "setup: SLURM is already installed ($(slurmctld -V))."
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
            && echo "setup: installed slurm-wlm and munge." \
            || echo "setup: WARNING: apt-get install slurm-wlm munge failed; the SLURM test will be skipped." >&2
    else
        echo "setup: WARNING: installing SLURM needs root and apt-get; the SLURM test will be skipped." >&2
    fi
fi

if "$PYTHON" -c "import dassl" >/dev/null 2>&1; then
    echo "setup: Dassl is already installed ($("$PYTHON" -c 'import dassl; print(dassl.__version__)'))."
    exit 0
fi
# Dassl's setup.py imports numpy at the top, so it is built without build isolation.
if "$PYTHON" -m pip install -q --no-build-isolation "dassl @ git+${DASSL_URL}@${DASSL_COMMIT}"; then
    echo "setup: Dassl installed from ${DASSL_URL} at ${DASSL_COMMIT}."
else
    echo "setup: WARNING: could not install Dassl from ${DASSL_URL} (no access to GitHub?). Install it by hand" \
         "(clone it, then: pip install --no-build-isolation .); until then train.py cannot run." >&2
fi
exit 0
