"""Kubernetes duration strings (`90s`, `1m30s`, `1.5h`, `500ms`), as metav1.Duration accepts them.

MetalLB's holdTime/keepaliveTime/connectTime are metav1.Duration, which parses Go's time.ParseDuration
syntax. We accept the same strings and keep seconds as a float. A bare number (`holdTime: 90`, which
YAML users write by accident) is refused as the API server refuses it (the CRD types the field as a
string), but with a message that says what to write instead.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds from a Go duration string; raises ValueError with a message a user can act on."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 90s or 1m30s")
    if isinstance(value, (int, float)):
        if isinstance(value, int) and value >= 0:
            raise ValueError(f"{value} is a number, not a duration: write it as a string with a unit, such as {value}s")
        raise ValueError(f"{value!r} is not a duration; use a form such as 90s, 1m30s or 500ms")
    if not isinstance(value, str) or not value:
        raise ValueError("must be a duration such as 90s or 1m30s")
    text = value.strip()
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise ValueError(f"{value!r} is not a duration; use a form such as 90s, 1m30s or 500ms")
    if sign < 0 and total:
        raise ValueError("must not be negative")
    if not math.isfinite(total):
        raise ValueError(f"{value!r} is too long a duration")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]
