"""metallb-bgp: a MetalLB-compatible BGP load balancer on ExaBGP (the command line).

argparse (standard library) is enough for a handful of subcommands; nothing here may print a traceback
for bad input: problems in the user's files are printed as `Kind namespace/name: field: message` and
the exit code says whether there were errors.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path

from metallb_bgp import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metallb-bgp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"metallb-bgp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check manifests; print every problem; exit 1 if any error")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="YAML files or folders")
    validate.add_argument("--namespace", default="metallb-system", help="namespace of the metallb.io objects")

    plan = sub.add_parser("plan", help="print the IP allocation and one node's desired routes")
    plan.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="YAML files or folders")
    plan.add_argument("--node", required=True, help="the node whose routes to show")
    plan.add_argument("-o", "--output", choices=("table", "json"), default="table")
    plan.add_argument("--namespace", default="metallb-system", help="namespace of the metallb.io objects")
    plan.add_argument("--load-balancer-class", default=None, help="only handle services of this class")
    run = sub.add_parser("run", help="controller and speaker in one process, on a folder of manifests")
    run.add_argument("--manifests", required=True, type=Path, action="append", metavar="DIR",
                     help="folder (or file) of YAML manifests; repeatable; watched for changes")
    run.add_argument("--node", required=True, help="this node's name (its Node object, if any, gives labels)")
    run.add_argument("--state-file", type=Path, default=None, help="JSON file keeping IP assignments across restarts")
    run.add_argument("--workdir", type=Path, default=None,
                     help="folder for ExaBGP's configuration and API socket (default: a private temporary folder)")
    run.add_argument("--router-id", type=ipaddress.IPv4Address, default=None,
                     help="BGP router ID (default: a peer's routerID or IPv4 sourceAddress)")
    run.add_argument("--namespace", default="metallb-system", help="namespace of the metallb.io objects")
    run.add_argument("--load-balancer-class", default=None, help="only handle services of this class")
    _logging_flags(run)
    return parser


def _logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-format", default="auto", choices=("auto", "json", "console"))


def _load(paths: Sequence[Path], namespace: str):
    from metallb_bgp.sources.manifests import ManifestFolder

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"error: no such file or folder: {', '.join(missing)}")
    folder = ManifestFolder(paths, namespace=namespace)
    folder.load()
    return folder.snapshot()


def cmd_validate(args: argparse.Namespace) -> int:
    from metallb_bgp.compiler import compile_config

    result = compile_config(_load(args.paths, args.namespace))
    for problem in result.errors:
        print(problem)
    errors = sum(1 for p in result.errors if p.is_error)
    warnings = len(result.errors) - errors
    print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from metallb_bgp.plan import make_plan
    from metallb_bgp.report import dumps, plan_json, plan_text

    plan = make_plan(
        _load(args.paths, args.namespace), node_name=args.node, load_balancer_class=args.load_balancer_class
    )
    print(dumps(plan_json(plan, args.node)) if args.output == "json" else plan_text(plan, args.node))
    return 1 if any(p.is_error for p in plan.problems) else 0


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from metallb_bgp import logs
    from metallb_bgp.embedded import RunOptions, run

    logs.configure(level=args.log_level, fmt=args.log_format)
    missing = [str(p) for p in args.manifests if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="metallb-bgp-") as scratch:
        options = RunOptions(
            manifests=tuple(args.manifests),
            node_name=args.node,
            workdir=args.workdir or Path(scratch),
            state_file=args.state_file,
            router_id=args.router_id,
            namespace=args.namespace,
            load_balancer_class=args.load_balancer_class,
        )
        asyncio.run(run(options))
    return 0


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a user must never see a traceback; the message names the failure
        print(f"error: internal failure in {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
