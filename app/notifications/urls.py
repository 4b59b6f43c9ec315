"""The SSRF guard for webhook URLs (Slack and generic): https only, an optional host allow-list,
and no loopback, private, link-local, multicast or metadata address unless allowed by setting.

A URL is checked when it is saved (its shape) and again just before each call (every address its
host resolves to then), and redirects are not followed.  Left open: a DNS answer that changes
in the moment between that check and the connection (rebinding) — closing it needs the
connection pinned to the checked address.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Mapping
from urllib.parse import urlsplit


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why and which setting would allow it."""


def check_shape(url: str, config: Mapping[str, Any]) -> None:
    """Scheme, host and allow-list, without a DNS lookup (for validating input)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrl("must be an https:// URL")
    if parts.scheme == "http" and not config["WEBHOOK_ALLOW_HTTP"]:
        raise UnsafeUrl("must use https:// (http is allowed only with JOBPLANE_WEBHOOK_ALLOW_HTTP)")
    if parts.username or parts.password:
        raise UnsafeUrl("must not carry a user name or password")
    try:
        parts.port
    except ValueError:  # refused now, or every delivery would fail on it with an unexpected error
        raise UnsafeUrl("has a port that is not a number from 0 to 65535") from None
    allowed = [h.strip().lower() for h in (config.get("WEBHOOK_ALLOWED_HOSTS") or "").split(",") if h.strip()]
    if allowed and parts.hostname.lower() not in allowed:
        raise UnsafeUrl(f"host {parts.hostname} is not in JOBPLANE_WEBHOOK_ALLOWED_HOSTS")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return  # a name: checked where it resolves to, when called
    _check_address(literal, config)


def _check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, config: Mapping[str, Any]) -> None:
    if config["WEBHOOK_ALLOW_PRIVATE"]:
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or str(address) == "169.254.169.254"):
        raise UnsafeUrl(f"resolves to {address}, a loopback, private, link-local or metadata address "
                        "(allowed only with JOBPLANE_WEBHOOK_ALLOW_PRIVATE)")


def check_before_call(url: str, config: Mapping[str, Any]) -> None:
    """Check the shape and every address the host resolves to now."""
    check_shape(url, config)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise UnsafeUrl(f"host {parts.hostname} does not resolve: {error}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        _check_address(address, config)
