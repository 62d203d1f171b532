"""The container image's build stage, without a Docker engine (none runs on these machines).

The Dockerfile copies only pyproject.toml, README.md and metallb_bgp/ and runs `pip install .`. This
builds the package from exactly that context and checks the wheel carries everything the image runs:
the package with the ExaBGP relay helper, the `metallb-bgp` entry point and the pinned ExaBGP.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_docker_build_context_builds_the_package_with_everything_the_image_runs(tmp_path: Path) -> None:
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    copied = [line for line in copied if not line.startswith("image/")]  # the steps and the prebuilt wheels
    context = tmp_path / "context"
    context.mkdir()
    for line in copied:
        for name in line.split():
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(source, context / name)
    assert sorted(p.name for p in context.iterdir()) == ["README.md", "metallb_bgp", "pyproject.toml"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(context)],
        check=True, capture_output=True, timeout=120,
    )
    (wheel,) = tmp_path.glob("metallb_bgp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"metallb_bgp/cli.py", "metallb_bgp/exabgp/relay.py", "metallb_bgp/daemons/speaker.py"} <= names
    assert "metallb-bgp = metallb_bgp.cli:main" in entry_points
    assert "Requires-Dist: exabgp==5.0.15" in metadata
