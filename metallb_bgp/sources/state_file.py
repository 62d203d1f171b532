"""Where the embedded mode remembers IP assignments between runs.

In a cluster, assignments live in each Service's status and survive a controller restart for free. A
folder of manifests has no status, so `metallb-bgp run --state-file FILE` keeps them in a small JSON
file, rewritten atomically (write to a temporary file, fsync, rename) so a crash mid-write never leaves
a truncated file that would renumber every service.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress

Assignments = Mapping[ServiceKey, tuple[IPAddress, ...]]


class StateFileError(Exception):
    """The state file exists but cannot be read: starting anyway could renumber every service."""


def load_state(path: Path) -> dict[ServiceKey, tuple[IPAddress, ...]]:
    """Assignments from `path`; a missing file is an empty state. A damaged one raises StateFileError
    naming the file and the problem: the user decides (fix it, or delete it to start afresh), because
    silently starting without it would move services to other IPs."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            ServiceKey(*key.split("/", 1)): tuple(ipaddress.ip_address(ip) for ip in ips)
            for key, ips in data["assignments"].items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise StateFileError(
            f"state file {path} cannot be read ({problem}); fix it, or delete it to let services take new IPs"
        ) from None


class StateFile:
    """The state file, kept as one encoded entry per service between writes.

    Why: encoding every assignment again (key and address strings, JSON) cost ~19 ms at 10,000
    services on every change that moved an IP; with the entries kept, a write joins strings that are
    already there, and a change encodes only the services it moved. Entries are written sorted as text
    (`"namespace/name":[...]` sorts as the string `namespace/name` does: the closing quote sorts before
    any character a Kubernetes name may hold), so the same assignments always give the same file.
    """

    def __init__(self, path: Path, assignments: Assignments | None = None) -> None:
        self.path = path
        self._entries = {key: _entry(key, ips) for key, ips in (assignments or {}).items()}

    def set(self, key: ServiceKey, ips: tuple[IPAddress, ...] | None) -> None:
        """`key`'s assignment is now `ips` (None: it has none any more)."""
        if ips is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = _entry(key, ips)

    def write(self) -> None:
        _replace_atomically(self.path, '{"assignments":{' + ",".join(sorted(self._entries.values())) + "}}")


def save_state(path: Path, assignments: Assignments) -> None:
    StateFile(path, assignments).write()


def _entry(key: ServiceKey, ips: tuple[IPAddress, ...]) -> str:
    # the C string encoder itself: json.dumps's set-up per call was half of a 10,000-service first write
    return f"{_string(str(key))}:[{','.join(_string(str(ip)) for ip in ips)}]"


_string = json.encoder.encode_basestring_ascii


def _replace_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
