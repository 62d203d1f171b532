#!/bin/sh
# The steps of the image, in one place: the Dockerfile runs them (`docker build .`, and `make image`,
# which builds the same Dockerfile with buildah on a Debian root filesystem made by mmdebstrap).
#
#   steps.sh packages           the Debian packages the image runs on, installed with apt
#   steps.sh wheels SRC OUT     the wheels of the package and its dependencies (SRC/image/wheels if
#                               `make image` built them already, else `pip wheel` from PyPI)
#   steps.sh install WHEELS     the package into /opt/metallb-bgp, the user 65532, and the clean-up
set -eu

VENV=/opt/metallb-bgp

packages() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # usr-is-merged stands in for usrmerge (in Debian's minimal base), which pulls in perl: see install
    apt-get install -y -q --no-install-recommends python3 python3-venv usr-is-merged
    clean_apt
}

wheels() {
    src=$1 out=$2
    mkdir -p "$out"
    if ls "$src"/image/wheels/*.whl >/dev/null 2>&1; then
        cp "$src"/image/wheels/*.whl "$out"/
    else
        python3 -m venv /tmp/wheel-builder
        /tmp/wheel-builder/bin/pip wheel --no-cache-dir --quiet -w "$out" "$src"
        rm -rf /tmp/wheel-builder
    fi
}

install() {
    wheels=$1
    python3 -m venv "$VENV"
    "$VENV"/bin/pip install --no-cache-dir --no-index --quiet --find-links "$wheels" metallb-bgp
    "$VENV"/bin/exabgp version >/dev/null
    "$VENV"/bin/metallb-bgp --version
    # nothing installs at run time: pip and setuptools go, and with them ensurepip's wheels
    "$VENV"/bin/pip uninstall -y -q pip setuptools 2>/dev/null || "$VENV"/bin/python -m pip uninstall -y -q pip
    # kubernetes 37 also ships an asyncio copy of its whole generated client (~68 MB); the daemons use
    # the synchronous one (tests/e2e/test_image.py imports every daemon in the image)
    rm -rf "$VENV"/lib/python3*/site-packages/kubernetes/aio
    export DEBIAN_FRONTEND=noninteractive
    # usrmerge is what pulls in perl (~50 MB; perl-base, which apt needs, stays); nothing here runs it
    apt-get purge -y -q --auto-remove python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl \
        usrmerge perl libperl5.36 perl-modules-5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl >/dev/null
    # a named user: ExaBGP looks its user up in /etc/passwd; 65532 is the chart's runAsUser/runAsGroup
    groupadd --system --gid 65532 metallb
    useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin metallb
    # what a running daemon never reads: tests shipped inside packages, docs, man pages, translations
    find "$VENV"/lib -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
    rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/lintian
    clean_apt
}

clean_apt() {
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log /root/.cache
}

step=$1
shift
"$step" "$@"
