"""metallb-bgp: a MetalLB-compatible BGP load balancer on ExaBGP (the command line).

argparse (standard library) is enough for a handful of subcommands; nothing here may print a traceback
for bad input: problems in the user's files are printed as `Kind namespace/name: field: message` and
the exit code says whether there were errors.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from metallb_bgp import __version__

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metallb-bgp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"metallb-bgp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check manifests; print every problem; exit 1 if any error")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="YAML files or folders")
    validate.add_argument("--namespace", default="metallb-system", help="namespace of the metallb.io objects")
    validate.add_argument("--load-balancer-class", default=None, help="only handle services of this class")

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
                     help="BGP router ID (default: the Node's IPv4 InternalIP, else an IPv4 sourceAddress or the route source)")
    run.add_argument("--namespace", default="metallb-system", help="namespace of the metallb.io objects")
    run.add_argument("--load-balancer-class", default=None, help="only handle services of this class")
    run.add_argument("--watch-step-ms", type=_positive_int, default=1, metavar="MS",
                     help="file watcher step: a change is seen 1-2 steps after it; each step wakes a thread (default 1)")
    run.add_argument("--control-socket", type=Path, default=None, metavar="PATH",
                     help="where `status` and `explain` ask this daemon (mode 0600 in a 0700 folder; "
                          "default: /run/metallb-bgp/control.sock as root, else in $XDG_RUNTIME_DIR)")
    _bmp_flags(run)
    _logging_flags(run)

    for name, what in (("status", "sessions, routes, configuration problems and ExaBGP's health"),
                       ("explain", "why a service is (not) announced: pool, IPs, advertisements, per node and peer")):
        inspect = sub.add_parser(name, help=f"{what}; from a running `run`, or with --kubeconfig from the cluster's status objects")
        if name == "explain":
            inspect.add_argument("service", metavar="NAMESPACE/NAME", help="the Service (NAME alone: namespace default)")
        inspect.add_argument("--control-socket", type=Path, default=None, metavar="PATH",
                             help="the `run` daemon's control socket (default: as `run`'s)")
        inspect.add_argument("--kubeconfig", type=Path, default=None,
                             help="Kubernetes mode: read the status objects the speakers write (as kubectl does)")
        inspect.add_argument("--namespace", default="metallb-system", help="namespace of the metallb.io objects")
        inspect.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    controller = sub.add_parser(
        "controller", help="Kubernetes mode: allocate service IPs (one leader), write status, annotations, events"
    )
    _kubernetes_flags(controller)
    controller.add_argument("--load-balancer-class", default=None, help="only handle services of this class")
    controller.add_argument("--lease-name", default="metallb-bgp-controller", help="the leader election Lease")
    controller.add_argument("--identity", default=None, help="this candidate's name in the Lease (default: host_random)")
    controller.add_argument("--lease-duration", type=int, default=15, metavar="SECONDS",
                            help="how long a leader's lease is valid without renewal")
    controller.add_argument("--renew-deadline", type=int, default=10, metavar="SECONDS",
                            help="how long the leader keeps trying to renew before it stops writing")
    controller.add_argument("--retry-period", type=int, default=2, metavar="SECONDS",
                            help="time between election attempts (at least 1)")
    controller.add_argument("--no-leader-election", action="store_true",
                            help="write without a Lease (only ever run one controller like this)")
    _bmp_flags(controller)
    _logging_flags(controller)

    speaker = sub.add_parser("speaker", help="Kubernetes mode: announce this node's service IPs over BGP (ExaBGP)")
    speaker.add_argument("--node-name", default=os.environ.get("NODE_NAME") or None, required=not os.environ.get("NODE_NAME"),
                         help="this node's name (default: $NODE_NAME)")
    _kubernetes_flags(speaker)
    speaker.add_argument("--workdir", type=Path, default=None,
                         help="folder for ExaBGP's configuration and API socket (default: a private temporary folder)")
    speaker.add_argument("--router-id", type=ipaddress.IPv4Address, default=None,
                         help="BGP router ID (default: the Node's IPv4 InternalIP, else an IPv4 sourceAddress or the route source)")
    speaker.add_argument("--load-balancer-class", default=None, help="only handle services of this class")
    speaker.add_argument("--service-bgp-status", action=argparse.BooleanOptionalAction, default=True,
                         help="write MetalLB's ServiceBGPStatus objects, one per service this node announces (default: on)")
    speaker.add_argument("--pod-name", default=os.environ.get("POD_NAME", ""),
                         help="this speaker's Pod, owner of its ServiceBGPStatus objects (default: $POD_NAME)")
    speaker.add_argument("--pod-uid", default=os.environ.get("POD_UID", ""), help="that Pod's UID (default: $POD_UID)")
    speaker.add_argument("--control-socket", type=Path, default=None, metavar="PATH",
                         help="where `status` and `explain` ask this speaker (`kubectl exec`; default: as `run`'s)")
    speaker.add_argument("--exabgp-prefixes-per-command", type=int, default=None, metavar="N",
                         help="prefixes per bulk announce/withdraw command (default 500)")
    speaker.add_argument("--exabgp-commands-in-flight", type=int, default=None, metavar="N",
                         help="bulk commands outstanding before waiting for ExaBGP's ack (default 4)")
    speaker.add_argument("--exabgp-reactor-speed", type=float, default=None, metavar="SECONDS",
                         help="ExaBGP's exabgp.reactor.speed (default 0.1)")
    speaker.add_argument("--exabgp-ack-timeout", type=float, default=None, metavar="SECONDS",
                         help="no ack for this long: ExaBGP is wedged and restarted (default 60)")
    _bmp_flags(speaker)
    _logging_flags(speaker)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _kubernetes_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--namespace", default="metallb-system", help="namespace of the metallb.io objects")


def _bmp_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bmp-listen", type=_listen_address, default=None, metavar="HOST[:PORT]",
                        help="run a BMP station (RFC 7854) here, that the routers listed with --bmp-router connect to "
                             "and stream what they received and accepted (port 11019 unless given); off by default")
    parser.add_argument("--bmp-router", action="append", default=[], type=ipaddress.ip_address, metavar="ADDRESS",
                        help="a router that may connect to the BMP station (the address it connects from) and is "
                             "expected to report; repeatable")
    parser.add_argument("--bmp-late", type=_duration, default=30.0, metavar="DURATION",
                        help="how long a router's report may lag an announcement before it counts as missing (default 30s)")


def _listen_address(text: str) -> tuple[str, int]:
    from metallb_bgp.daemons.runtime import BMP_PORT

    host, port = text, BMP_PORT
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else BMP_PORT
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not an IP address (with an optional :PORT)") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text}: port {port} out of range")
    return host, port


def _duration(text: str) -> float:
    from metallb_bgp.api.duration import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bmp_problem(args: argparse.Namespace) -> str | None:
    if args.bmp_router and args.bmp_listen is None:
        return "--bmp-router needs --bmp-listen (the station's address)"
    if args.bmp_listen is not None and not args.bmp_router:
        return "--bmp-listen needs at least one --bmp-router: only listed routers may connect"
    return None


def _logging_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every daemon has: logging, and the metrics/health endpoint (off unless asked for)."""
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-format", default="auto", choices=("auto", "json", "console"))
    parser.add_argument("--metrics-address", default=None, metavar="HOST:PORT",
                        help="serve /metrics, /healthz and /readyz here (e.g. 127.0.0.1:7472); off by default")


def _serve_metrics(args: argparse.Namespace) -> bool:
    if not args.metrics_address:
        return True
    from metallb_bgp.observe import metrics

    try:
        metrics.serve(args.metrics_address)
    except (ValueError, OSError) as exc:
        print(f"error: --metrics-address {args.metrics_address}: {exc}", file=sys.stderr)
        return False
    return True


def _folder(paths: Sequence[Path], namespace: str):
    from metallb_bgp.sources.manifests import ManifestFolder

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"error: no such file or folder: {', '.join(missing)}")
    folder = ManifestFolder(paths, namespace=namespace)
    folder.load()
    return folder


def _load(paths: Sequence[Path], namespace: str):
    return _folder(paths, namespace).snapshot()


def cmd_validate(args: argparse.Namespace) -> int:
    from metallb_bgp.core.plan.pipeline import check

    folder = _folder(args.paths, args.namespace)
    problems = check(folder.snapshot(), load_balancer_class=args.load_balancer_class)
    for problem in problems:
        print(folder.located(problem))
    errors = sum(1 for p in problems if p.is_error)
    warnings = len(problems) - errors
    print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from metallb_bgp.core.plan.pipeline import make_plan
    from metallb_bgp.observe.report import dumps, plan_json, plan_text

    plan = make_plan(
        _load(args.paths, args.namespace), node_name=args.node, load_balancer_class=args.load_balancer_class
    )
    print(dumps(plan_json(plan, args.node)) if args.output == "json" else plan_text(plan, args.node))
    return 1 if any(p.is_error for p in plan.problems) else 0


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from metallb_bgp.daemons.run import RunOptions, run
    from metallb_bgp.observe import logs
    from metallb_bgp.observe.control import default_socket
    from metallb_bgp.sources.state_file import StateFileError

    logs.configure(level=args.log_level, fmt=args.log_format)
    if not _serve_metrics(args):
        return 1
    problem = _bmp_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
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
            watch_step_ms=args.watch_step_ms,
            control_socket=args.control_socket or default_socket(),
            bmp_listen=args.bmp_listen,
            bmp_routers=tuple(str(r) for r in args.bmp_router),
            bmp_late=args.bmp_late,
        )
        try:
            asyncio.run(run(options))
        except StateFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def _kube_client(args: argparse.Namespace, component: str) -> ApiClient:
    from metallb_bgp.kube.client import api_client_from

    if args.kubeconfig is not None and not args.kubeconfig.exists():
        raise SystemExit(f"error: no such kubeconfig: {args.kubeconfig}")
    try:
        return api_client_from(args.kubeconfig, component)
    except Exception as exc:  # noqa: BLE001 - kubernetes.config raises several types for a bad config
        raise SystemExit(f"error: cannot load the Kubernetes configuration: {exc}") from None


def cmd_controller(args: argparse.Namespace) -> int:
    import asyncio

    from metallb_bgp.daemons.controller import ControllerOptions, default_identity, run_controller
    from metallb_bgp.kube.leader import LeaseTimings
    from metallb_bgp.observe import logs

    logs.configure(level=args.log_level, fmt=args.log_format)
    problem = _bmp_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    if not _serve_metrics(args):
        return 1
    timings = LeaseTimings(args.lease_duration, args.renew_deadline, args.retry_period)
    if problems := timings.problems():
        print(f"error: leader election timings: {'; '.join(problems)}", file=sys.stderr)
        return 1
    options = ControllerOptions(
        namespace=args.namespace,
        load_balancer_class=args.load_balancer_class,
        lease_name=args.lease_name,
        identity=args.identity or default_identity(),
        timings=timings,
        leader_election=not args.no_leader_election,
        bmp_listen=args.bmp_listen,
        bmp_routers=tuple(str(r) for r in args.bmp_router),
        bmp_late=args.bmp_late,
    )
    asyncio.run(run_controller(_kube_client(args, "controller"), options))
    return 0


def cmd_speaker(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from metallb_bgp.daemons.speaker import SpeakerOptions, run_speaker
    from metallb_bgp.exabgp import EngineTuning
    from metallb_bgp.observe import logs
    from metallb_bgp.observe.control import default_socket

    logs.configure(level=args.log_level, fmt=args.log_format)
    problem = _bmp_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    if not _serve_metrics(args):
        return 1
    tuning = {
        name: value
        for name, value in (
            ("prefixes_per_command", args.exabgp_prefixes_per_command),
            ("commands_in_flight", args.exabgp_commands_in_flight),
            ("reactor_speed", args.exabgp_reactor_speed),
            ("ack_timeout", args.exabgp_ack_timeout),
        )
        if value is not None
    }
    if any(value <= 0 for value in tuning.values()):
        print("error: --exabgp-* values must be positive", file=sys.stderr)
        return 1
    api_client = _kube_client(args, "speaker")
    with tempfile.TemporaryDirectory(prefix="metallb-bgp-") as scratch:
        options = SpeakerOptions(
            node_name=args.node_name,
            workdir=args.workdir or Path(scratch),
            namespace=args.namespace,
            router_id=args.router_id,
            load_balancer_class=args.load_balancer_class,
            tuning=EngineTuning(**tuning),
            service_bgp_status=args.service_bgp_status,
            pod_name=args.pod_name,
            pod_uid=args.pod_uid,
            control_socket=args.control_socket or default_socket(),
            bmp_listen=args.bmp_listen,
            bmp_routers=tuple(str(r) for r in args.bmp_router),
            bmp_late=args.bmp_late,
        )
        asyncio.run(run_speaker(api_client, options))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """`status` and `explain`: ask the running `run`, or (with --kubeconfig) read the cluster's status objects."""
    from metallb_bgp.observe import control
    from metallb_bgp.observe.inspect import explain_table, render, status_table

    namespace, _, name = getattr(args, "service", "").rpartition("/")
    service = (namespace or "default", name)
    if args.kubeconfig is not None:
        from metallb_bgp.kube import inspect as cluster

        api = _kube_client(args, "cli")
        try:
            answer = (cluster.cluster_status(api, args.namespace) if args.command == "status"
                      else cluster.cluster_explain(api, args.namespace, *service))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - API errors and connection errors alike: say so, exit 1
            print(f"error: reading the cluster: {type(exc).__name__}: {exc}"[:500], file=sys.stderr)
            return 1
        finally:
            api.close()
    else:
        path = args.control_socket or control.default_socket()
        request = {"command": "status"} if args.command == "status" else {"command": "explain", "service": "/".join(service)}
        try:
            answer = control.ask(path, request)
        except OSError as exc:
            print(f"error: no `metallb-bgp run` answers on {path} ({exc.strerror or exc}); "
                  "in Kubernetes mode give --kubeconfig", file=sys.stderr)  # fmt: skip
            return 1
    if "error" in answer:
        print(f"error: {answer['error']}", file=sys.stderr)
        return 1
    table = status_table(answer) if args.command == "status" else explain_table(answer)
    sys.stdout.write(render(answer, args.output, table))
    return 0 if answer.get("found", True) else 1


COMMANDS = {
    "status": cmd_inspect,
    "explain": cmd_inspect,
    "validate": cmd_validate,
    "plan": cmd_plan,
    "run": cmd_run,
    "controller": cmd_controller,
    "speaker": cmd_speaker,
}


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
