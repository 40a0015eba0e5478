"""What Kubernetes accepts as object names, label values, quantities, Secret keys and durations."""

from __future__ import annotations

import re

from conveyor.errors import ConfigError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?[smhdSMHD]?$")


def check_dns_label(value: str, what: str, max_len: int = 63) -> str:
    """Return ``value`` if it is a valid Kubernetes object name (RFC 1123 label).

    Raises:
        ConfigError: it is not.
    """
    if len(value) > max_len or not _DNS_LABEL.match(value):
        raise ConfigError(
            f"{what} {value!r} is not a valid Kubernetes name: lower-case letters, digits "
            f"and '-', starting and ending with a letter or digit, at most {max_len} characters"
        )
    return value


def check_quantity(value: str, what: str) -> str:
    """Return ``value`` if it is a Kubernetes quantity such as ``500m`` or ``1Gi``."""
    if not _QUANTITY.match(value):
        raise ConfigError(f"{what} {value!r} is not a Kubernetes quantity (e.g. 500m, 1, 512Mi)")
    return value


def is_dns_subdomain(value: str) -> bool:
    """Whether ``value`` can name a Secret (an RFC 1123 subdomain, at most 253 characters)."""
    return len(value) <= 253 and bool(_DNS_SUBDOMAIN.match(value))


def is_secret_key(value: str) -> bool:
    """Whether ``value`` can be a key in a Secret's data."""
    return len(value) <= 253 and bool(_SECRET_KEY.match(value))


def is_label_value(value: str, max_len: int = 63) -> bool:
    """Whether ``value`` can be a label's value (at most ``max_len`` characters)."""
    return len(value) <= max_len and bool(_LABEL_VALUE.match(value))


def is_duration(value: str) -> bool:
    """Whether ``value`` is a duration ``conveyor ledger prune`` reads (45m, 12h, 30d)."""
    return bool(_DURATION.match(value.strip()))
