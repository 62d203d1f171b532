"""Kubernetes' rules for names, labels and annotation keys, as the API server applies them.

A folder of manifests has not been through an API server, so nothing else would refuse a name with a
newline, braces or a terminal escape sequence in it; and such a name would then be printed, logged and
rendered into ExaBGP's configuration. The rules are Kubernetes' own (apimachinery's
`IsDNS1123Subdomain`, `IsDNS1123Label`, `IsDNS1035Label`, `IsQualifiedName`, `IsValidLabelValue`),
and each problem is a sentence that says what the name must look like. User text in a message is
shown with `repr`, so it cannot forge a line of output either.
"""

from __future__ import annotations

import re

LABEL_SHAPE = "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
SUBDOMAIN_SHAPE = "a DNS subdomain: at most 253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
DNS_LABEL_SHAPE = "a DNS label: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
DNS1035_SHAPE = "a DNS label that starts with a letter: at most 63 lowercase letters, digits or '-', ending with a letter or digit"

_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else f"{text[:80]}...") + (f" ({len(text)} characters)" if len(text) > 80 else "")


def subdomain_problem(name: str) -> str:
    """'' if `name` is a DNS-1123 subdomain (most objects' names), else why not."""
    if len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name):
        return ""
    return f"{_shown(name)} is not {SUBDOMAIN_SHAPE}"


def dns_label_problem(name: str) -> str:
    """'' if `name` is a DNS-1123 label (namespaces), else why not."""
    if len(name) <= 63 and _DNS_LABEL.fullmatch(name):
        return ""
    return f"{_shown(name)} is not {DNS_LABEL_SHAPE}"


def dns1035_problem(name: str) -> str:
    """'' if `name` is a DNS-1035 label (Services), else why not."""
    if len(name) <= 63 and _DNS1035.fullmatch(name):
        return ""
    return f"{_shown(name)} is not {DNS1035_SHAPE}"


def label_key_problem(key: str, what: str = "label key") -> str:
    """'' if `key` is a qualified name (label and annotation keys: an optional DNS-subdomain prefix and '/')."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"invalid {what} {_shown(key)}: the prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"invalid {what} {_shown(key)}: {LABEL_SHAPE}"
    return ""


def label_value_problem(value: str) -> str:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return f"invalid label value {_shown(value)}: {LABEL_SHAPE}"
    return ""
