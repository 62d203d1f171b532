"""`metallb-bgp validate` and `metallb-bgp plan`, run as a user runs them (a child process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metallb_bgp.cli", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_validate_accepts_the_examples_folder() -> None:
    result = cli("validate", "examples")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s)" in result.stderr


def test_validate_names_object_and_field_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "peer.yaml").write_text(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r, namespace: metallb-system}\n"
        "spec: {myASN: 64500, peerASN: 64501, peerAdress: 10.0.0.1}\n"
    )
    result = cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert "BGPPeer metallb-system/r: spec.peerAdress: unknown field" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_reports_invalid_yaml_with_path_and_line_without_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: [x\n")
    result = cli("validate", str(broken))
    assert result.returncode == 1
    assert f"File {broken}: line" in result.stdout and "invalid YAML" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_warnings_alone_exit_0(tmp_path: Path) -> None:
    (tmp_path / "l2.yaml").write_text(
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2, namespace: metallb-system}\n"
    )
    result = cli("validate", str(tmp_path))
    assert result.returncode == 0
    assert result.stdout.startswith("warning: L2Advertisement metallb-system/l2")


def test_validate_missing_path_is_an_error_not_a_traceback() -> None:
    result = cli("validate", "no/such/folder")
    assert result.returncode != 0
    assert "no such file or folder" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_plan_prints_allocation_and_routes_as_table() -> None:
    result = cli("plan", "examples", "--node", "demo-node")
    assert result.returncode == 0, result.stderr
    assert "default/nginx  192.168.10.0  first-pool" in result.stdout
    route = next(line for line in result.stdout.splitlines() if line.startswith("192.168.10.0/32"))
    assert "demo-router" in route and "64500:100" in route and "64500:1:2" in route
    assert "local-pref" not in route  # the demo peer is eBGP: its localPref 150 is not sent, so not shown


def test_plan_shows_local_pref_for_ibgp_peers_only(tmp_path: Path) -> None:
    shutil.copytree("examples", tmp_path / "m")
    peer = (tmp_path / "m" / "peer.yaml").read_text()
    internal = peer.replace("name: demo-router", "name: internal").replace("peerASN: 64501", "peerASN: 64500")
    internal = internal.replace("peerPort: 1790", "peerPort: 1791")
    (tmp_path / "m" / "peer-internal.yaml").write_text(internal)
    result = cli("plan", str(tmp_path / "m"), "--node", "demo-node", "-o", "json")
    assert result.returncode == 0, result.stderr
    prefs = {r["peer"]: r["localPref"] for r in json.loads(result.stdout)["routes"] if r["prefix"] == "192.168.10.0/32"}
    assert prefs == {"demo-router": None, "internal": 150}


def test_plan_json_names_skipped_services_with_reasons(tmp_path: Path) -> None:
    for name in ("pool.yaml", "peer.yaml", "advertisement.yaml"):
        (tmp_path / name).write_text((ROOT / "examples" / name).read_text())
    nginx = (ROOT / "examples" / "nginx.yaml").read_text()
    (tmp_path / "svc.yaml").write_text(nginx.split("---")[0])  # the Service without its endpoints
    result = cli("plan", str(tmp_path), "--node", "demo-node", "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["routes"] == []
    assert data["skipped"] == [
        {"service": "default/nginx", "reason": "noEndpoints", "detail": data["skipped"][0]["detail"]}
    ]
    assert data["allocations"][0]["ips"] == ["192.168.10.0"]


def test_every_command_and_flag_is_documented_in_docs_cli() -> None:
    import argparse

    from metallb_bgp.cli import _parser

    text = (ROOT / "docs" / "cli.md").read_text()
    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in subparsers.choices.items():
        if f"`metallb-bgp {name}" not in text:
            missing.append(name)
        for action in sub._actions:
            missing += [flag for flag in action.option_strings if flag.startswith("--") and flag != "--help" and flag not in text]
    assert not missing, f"undocumented in docs/cli.md: {sorted(set(missing))}"


def test_run_refuses_a_damaged_state_file_instead_of_renumbering_every_service(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"assignments": {"default/web": ["not-an-ip"]}}')
    result = cli("run", "--manifests", "examples", "--node", "demo-node", "--state-file", str(state),
                 "--workdir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert f"state file {state} cannot be read" in result.stderr and "not-an-ip" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_run_refuses_a_watch_step_below_one_millisecond(tmp_path: Path) -> None:
    result = cli("run", "--manifests", "examples", "--node", "demo-node", "--watch-step-ms", "0", "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert "--watch-step-ms: 0 is not a positive number" in result.stderr


def test_the_bmp_flags_are_refused_when_they_cannot_work(tmp_path: Path) -> None:
    """A station needs an address and the routers that may connect; a router list needs a station;
    the address is an IP (with an optional port, an IPv6 one in brackets) and the lateness a duration."""
    base = ("run", "--manifests", "examples", "--node", "demo-node", "--workdir", str(tmp_path))
    for flags, code, complaint in [
        (("--bmp-listen", "127.0.0.1"), 1, "--bmp-listen needs at least one --bmp-router"),
        (("--bmp-router", "192.0.2.1"), 1, "--bmp-router needs --bmp-listen"),
        (("--bmp-listen", "tor-a:11019", "--bmp-router", "192.0.2.1"), 2, "not an IP address"),
        (("--bmp-listen", "[fd00::1]:70000", "--bmp-router", "192.0.2.1"), 2, "port 70000 out of range"),
        (("--bmp-listen", "127.0.0.1", "--bmp-router", "tor-a"), 2, "--bmp-router"),
        (("--bmp-listen", "127.0.0.1", "--bmp-router", "192.0.2.1", "--bmp-late", "30"), 2, "--bmp-late"),
    ]:
        result = cli(*base, *flags)
        assert result.returncode == code, (flags, result.stderr)
        assert complaint in result.stderr, (flags, result.stderr)
        assert "Traceback" not in result.stderr
