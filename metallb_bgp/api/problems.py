"""Problems found in user objects, as values.

A bad object must never stop the good ones from working, so validation does not raise: it returns
`ObjectError`s that name the object and the field, and the caller leaves that object out. The same
values reach the CLI, logs, Kubernetes status and Events, so their text form is fixed here once:
`Kind namespace/name: field: message`. The objects a message names are also kept as values (`refs`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field  # `field` is also one of ObjectError's fields
from enum import Enum

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators and bidirectional overrides:
# whatever could end a line, move the cursor or reorder what a terminal shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control character escaped (`\\n`, `\\x1b`, `\\u2028`): a user's string in
    our output can neither forge a line nor reach the terminal as an escape sequence."""
    return _UNPRINTABLE.sub(_escape, text) if _UNPRINTABLE.search(text) else text


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    return named or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class ObjectError:
    kind: str
    namespace: str
    name: str
    field: str
    message: str
    severity: Severity = Severity.ERROR
    # (kind, namespace, name) of each other object the message names: what code reads instead of the
    # text, so a message can be reworded freely. Not part of equality: the text already says it.
    refs: tuple[tuple[str, str, str], ...] = dataclass_field(default=(), compare=False)

    @property
    def object_ref(self) -> str:
        ref = f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"
        return printable(ref)

    def __str__(self) -> str:
        where = f"{self.object_ref}: {printable(self.field)}" if self.field else self.object_ref
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{prefix}{where}: {printable(self.message)}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR
