"""Problems found in user objects, as values.

A bad object must never stop the good ones from working, so validation does not raise: it returns
`ObjectError`s that name the object and the field, and the caller leaves that object out. The same
values reach the CLI, logs, Kubernetes status and Events, so their text form is fixed here once:
`Kind namespace/name: field: message`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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

    @property
    def object_ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def __str__(self) -> str:
        where = f"{self.object_ref}: {self.field}" if self.field else self.object_ref
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{prefix}{where}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR
