"""The image `make image` built, run from outside as a node would run it: no Docker engine.

Each test runs the image's own `metallb-bgp` inside the image with `buildah run --isolation chroot`
(the host's network: a BIRD on loopback is reachable), as user 65532 like the chart. `buildah run`
has no read-only root filesystem, so the test that needs one mounts the image's root read-only itself
(a private mount namespace, the image's files bind-mounted read-only, `/tmp` and the work volume
writable, then chroot as 65532): what the chart's `readOnlyRootFilesystem: true` gives the pods.

`make test` builds the image first (`make image`); without it these tests fail in CI and are skipped
elsewhere, like the other tools the tests need.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bird import BirdRouter, Speaker
from builders import service_manifest
from runs import ADVERTISEMENT, POOL, SPEAKER, descendants, free_peer_port, router_peer
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"localhost/metallb-bgp:{VERSION}"
ARCHIVE = ROOT / "build" / "image" / f"metallb-bgp-{VERSION}.oci.tar"
BUILDAH = ["buildah", "--storage-driver", "vfs"]
USER = "65532:65532"

pytestmark = pytest.mark.router


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A working container of the built image (removed at the end)."""
    if shutil.which("buildah") is None:
        _missing("buildah is missing: run `make image` (it installs buildah and mmdebstrap when root)")
    listed = subprocess.run([*BUILDAH, "images", "--format", "{{.Name}}:{{.Tag}}"], capture_output=True, text=True, check=False)
    if IMAGE not in listed.stdout.split():
        _missing(f"{IMAGE} is not in buildah's storage: run `make image`")
    name = buildah("from", "--quiet", IMAGE)
    try:
        yield name
    finally:
        subprocess.run([*BUILDAH, "rm", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def rootfs(container: str) -> Iterator[Path]:
    """The image's root filesystem, as files."""
    root = Path(buildah("mount", container))
    try:
        yield root
    finally:
        subprocess.run([*BUILDAH, "umount", container], capture_output=True, check=False)


def in_image(container: str, *command: str, volumes: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess[str]:
    mounts = [option for volume in volumes for option in ("-v", volume)]
    return subprocess.run(
        [*BUILDAH, "run", "--isolation", "chroot", "--user", USER, *mounts, container, "--", *command],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def test_the_image_is_named_and_archived_as_the_chart_expects(container: str) -> None:
    assert ARCHIVE.is_file(), f"{ARCHIVE} is missing: `make image` writes it"
    with tarfile.open(ARCHIVE) as archive:
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
    [manifest] = index["manifests"]
    # the chart's default image (tests/e2e/test_chart.py checks the Deployment and DaemonSet name it)
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == f"metallb-bgp:{VERSION}"
    config = buildah("inspect", "--format", "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}", IMAGE)
    assert config == "65532:65532 [metallb-bgp]"
    env = buildah("inspect", "--format", "{{.OCIv1.Config.Env}}", IMAGE)
    assert "HOME=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def test_validate_and_plan_work_on_the_examples_inside_the_image(container: str) -> None:
    examples = f"{ROOT / 'examples'}:/examples:ro"
    validated = in_image(container, "metallb-bgp", "validate", "/examples", volumes=(examples,))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    planned = in_image(container, "metallb-bgp", "plan", "--node", "node-a", "-o", "json", "/examples", volumes=(examples,))
    assert planned.returncode == 0, planned.stderr
    assert '"routes"' in planned.stdout


def test_every_daemon_and_the_client_it_needs_import_inside_the_image(container: str) -> None:
    modules = "metallb_bgp.daemons.controller, metallb_bgp.daemons.speaker, metallb_bgp.daemons.run, kubernetes.client"
    imported = in_image(container, "python3", "-c", f"import {modules}; print('ok')")
    assert imported.stdout.strip() == "ok", imported.stderr
    for role in ("controller", "speaker"):
        helped = in_image(container, "metallb-bgp", role, "--help")
        assert helped.returncode == 0 and "usage" in helped.stdout, helped.stderr


def test_the_image_holds_no_compiler_no_pip_and_no_tests(rootfs: Path) -> None:
    binaries = {p.name for d in ("usr/bin", "usr/local/bin", "opt/metallb-bgp/bin") for p in (rootfs / d).glob("*")}
    assert not binaries & {"gcc", "cc", "c++", "g++", "x86_64-linux-gnu-gcc-12", "make", "pip", "pip3"}, binaries & {"gcc", "cc", "pip"}
    site = next((rootfs / "opt/metallb-bgp/lib").glob("python3*/site-packages"))
    assert not [p for p in site.glob("pip*")], "pip is still installed"
    assert not (rootfs / "root/.cache").exists() and not list((rootfs / "tmp").iterdir())
    assert not [p for p in site.rglob("*") if p.is_dir() and p.name in ("tests", "test")]
    ours = {path.name for path in (ROOT / "tests").rglob("test_*.py")}
    assert not [p for p in rootfs.rglob("*.py") if p.name in ours or p.name == "conftest.py"]  # none of our tests
    assert (site / "metallb_bgp" / "exabgp" / "relay.py").is_file()


def _manifests(directory: Path, router_port: int) -> Path:
    manifests = directory / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(POOL)
    (manifests / "peer.yaml").write_text(router_peer(router_port))
    (manifests / "adv.yaml").write_text(ADVERTISEMENT.format(community="64500:1"))
    (manifests / "web.yaml").write_text(service_manifest("web"))
    return manifests


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop what we started: its whole process group (buildah run, or unshare, and the daemon under it)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def router(bird_factory: Callable[..., BirdRouter]) -> BirdRouter:
    found = bird_factory(asn=64501, port=free_peer_port())
    found.add_speaker(Speaker(name="speaker", address=SPEAKER, asn=64500)).start()
    return found


def test_run_inside_the_image_announces_to_a_bird_outside_it(container: str, router: BirdRouter, short_tmp: Path) -> None:
    manifests = _manifests(short_tmp, router.port)
    work = short_tmp / "work"
    work.mkdir()
    os.chown(work, 65532, 65532)
    log = (short_tmp / "run.log").open("wb")
    process = subprocess.Popen(
        [*BUILDAH, "run", "--isolation", "chroot", "--user", USER, "-v", f"{manifests}:/manifests:ro", "-v", f"{work}:/work",
         container, "--", "metallb-bgp", "run", "--manifests", "/manifests", "--node", "node-a", "--workdir", "/work/exabgp",
         "--state-file", "/work/state.json", "--log-format", "json"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        routes = router.wait_routes(lambda r: any(str(p) == "198.51.100.0/32" for p in r), timeout=60, what="web's /32 from the image")
        assert [route.communities for route in routes.values()] == [("64500:1",)]
    finally:
        _stop(process)
        log.close()
        print((short_tmp / "run.log").read_text()[-3000:])


def _uid_of_exabgp(ancestor: int) -> int | None:
    """The user ExaBGP runs as, among the processes below `ancestor` (its command line names exabgp)."""
    for pid in descendants(ancestor):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"bin/exabgp" in command:
            return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    return None


def test_exabgp_runs_as_65532_on_a_read_only_root_and_writes_only_its_volume(
    rootfs: Path, router: BirdRouter, short_tmp: Path
) -> None:
    manifests = _manifests(short_tmp, router.port)
    work = short_tmp / "work"
    work.mkdir()
    os.chown(work, 65532, 65532)
    before = {str(p.relative_to(rootfs)): p.lstat().st_mtime_ns for p in rootfs.rglob("*")}
    # the chart's pod: root read-only, an emptyDir on /tmp, the work volume writable; host network
    script = f"""set -e
mount --bind {rootfs} {rootfs} && mount -o remount,bind,ro {rootfs}
mount -t tmpfs -o mode=1777 tmpfs {rootfs}/tmp
mkdir -p {rootfs}/tmp/manifests {rootfs}/tmp/work
mount --bind -o ro {manifests} {rootfs}/tmp/manifests && mount --bind {work} {rootfs}/tmp/work
mount -t proc proc {rootfs}/proc && mount --rbind /dev {rootfs}/dev
exec chroot --userspec=65532:65532 {rootfs} /usr/bin/env -i HOME=/tmp PATH=/opt/metallb-bgp/bin:/usr/bin:/bin \\
    PYTHONDONTWRITEBYTECODE=1 metallb-bgp run --manifests /tmp/manifests --node node-a --workdir /tmp/work/exabgp \\
    --state-file /tmp/work/state.json --log-format json
"""
    log = (short_tmp / "ro.log").open("wb")
    process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        router.wait_routes(lambda r: any(str(p) == "198.51.100.0/32" for p in r), timeout=60, what="web's /32 from a read-only root")
        assert wait_until(lambda: _uid_of_exabgp(process.pid), what="the ExaBGP child") == 65532
        assert (work / "exabgp").is_dir() and (work / "state.json").is_file()  # what it wrote went to its volume
    finally:
        _stop(process)
        log.close()
        print((short_tmp / "ro.log").read_text()[-3000:])
    after = {str(p.relative_to(rootfs)): p.lstat().st_mtime_ns for p in rootfs.rglob("*")}
    assert after == before  # nothing in the image's own files changed
