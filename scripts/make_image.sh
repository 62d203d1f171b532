#!/bin/sh
# `make image`: the OCI image without a Docker daemon, from the registries this machine reaches.
#
# 1. a Debian bookworm root filesystem (mmdebstrap, minbase) becomes the local base image;
# 2. the package's wheels are built here (pip, as `make test` installs it) into image/wheels/;
# 3. buildah builds the repository's own Dockerfile on that base (chroot isolation, vfs storage: no
#    daemon, no cgroups needed), so the Dockerfile's steps (image/steps.sh) are the ones tested here;
#    squashed into one layer, so what the steps delete from the base is not shipped underneath;
# 4. the image is kept in buildah's local storage as localhost/metallb-bgp:VERSION and written as an
#    OCI archive, build/image/metallb-bgp-VERSION.oci.tar; its size and what takes the space are printed.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VERSION=$($PY -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=localhost/metallb-bgp:$VERSION
BASE=localhost/metallb-bgp-base:bookworm
OUT=build/image
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BUILDAH="buildah --storage-driver vfs"
started=$(date +%s)
mkdir -p "$OUT"

echo "== base: Debian bookworm minbase (mmdebstrap)"
rm -f "$OUT/rootfs.tar"
mmdebstrap --quiet --variant=minbase bookworm "$OUT/rootfs.tar" "$MIRROR"
container=$($BUILDAH from scratch)
$BUILDAH add "$container" "$OUT/rootfs.tar" / >/dev/null
$BUILDAH commit --quiet --rm "$container" "$BASE" >/dev/null
rm -f "$OUT/rootfs.tar"

echo "== wheels: the package and its dependencies"
rm -f image/wheels/*.whl
$PY -m pip wheel --quiet --disable-pip-version-check -w image/wheels .

echo "== image: the Dockerfile, built by buildah"
$BUILDAH bud --quiet --isolation chroot --layers=false --squash --build-arg "BASE=$BASE" -t "$IMAGE" -f Dockerfile . >/dev/null
rm -f image/wheels/*.whl
$BUILDAH rmi "$BASE" >/dev/null 2>&1 || true

archive="$OUT/metallb-bgp-$VERSION.oci.tar"
rm -f "$archive"
$BUILDAH push --quiet "$IMAGE" "oci-archive:$archive:metallb-bgp:$VERSION"
echo "== built $IMAGE in $(( $(date +%s) - started )) s"
echo "   OCI archive: $archive ($(du -m "$archive" | cut -f1) MB)"
container=$($BUILDAH from --quiet "$IMAGE")
root=$($BUILDAH mount "$container")
echo "   unpacked: $(du -sm "$root" | cut -f1) MB; the largest parts (MB):"
du -sm "$root"/opt/metallb-bgp/lib/python3*/site-packages/* "$root"/usr/lib/python3.* "$root"/usr/lib/x86_64-linux-gnu \
    "$root"/usr/bin "$root"/var "$root"/usr/share 2>/dev/null | sort -rn | head -12 | sed "s|$root||; s/^/     /"
$BUILDAH umount "$container" >/dev/null
$BUILDAH rm "$container" >/dev/null
