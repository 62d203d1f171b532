"""The layer contracts (`pyproject.toml`, run by `make test` through `lint-imports`) hold, and they can
fail: a copy of the package with one wrong import breaks exactly the contract that forbids it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "metallb_bgp", tmp_path / "metallb_bgp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold_on_the_tree() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "wrong_import", "broken"), [
    ("core/net.py", "from metallb_bgp.observe import metrics", "layers: api <- core <- edges <- daemons <- cli"),
    ("exabgp/backoff.py", "from metallb_bgp.sources import manifests", "layers: api <- core <- edges <- daemons <- cli"),
    ("daemons/speaker.py", "from metallb_bgp.daemons import controller", "no daemon imports another"),
    ("daemons/runtime.py", "from metallb_bgp.gen import crds", "nothing at run time imports the build-time generators"),
])  # fmt: skip
def test_a_wrong_import_breaks_its_contract(tmp_path: Path, module: str, wrong_import: str, broken: str) -> None:
    tree = copy_of_the_package(tmp_path)
    path = tree / "metallb_bgp" / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    assert f"{broken} BROKEN" in result.stdout
