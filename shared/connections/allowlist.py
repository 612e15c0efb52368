"""Which model endpoints a connection may reach.

Allowed: https to a host under an Azure OpenAI / Foundry / OpenAI suffix, plus hosts named in
TENANTFLOW_ALLOWED_HOSTS (which alone may use plain http, e.g. 127.0.0.1 for the local emulator).
Refused with a one-line reason: other schemes, userinfo, query or fragment, IP literals (any notation),
cloud metadata hosts, hosts outside the list. The result is normalised to `scheme://host[:port][/path]`.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from shared.engine.ports import EndpointPolicy, StepFailure

ALLOWED_SUFFIXES = (
    ".openai.azure.com",
    ".cognitiveservices.azure.com",
    ".services.ai.azure.com",
    ".api.cognitive.microsoft.com",
    ".inference.ai.azure.com",
    ".models.ai.azure.com",
    ".azure-api.net",
)
ALLOWED_EXACT = ("api.openai.com",)
METADATA_HOSTS = ("169.254.169.254", "metadata.google.internal", "metadata.azure.com", "fd00:ec2::254",
                  "100.100.100.200", "metadata")
HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|\d+)(\.(0x[0-9a-f]+|\d+)){0,3}$")


def refuse(reason: str) -> StepFailure:
    return StepFailure(f"endpoint refused: {reason}", "endpoint_refused")


class EndpointAllowlist(EndpointPolicy):
    def __init__(self, extra_hosts: tuple[str, ...] = ()) -> None:
        self.extra_hosts = {h.strip().lower().rstrip(".") for h in extra_hosts if h.strip()}

    def check(self, endpoint: str) -> str:
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise refuse("empty endpoint")
        text = endpoint.strip()
        if any(ord(c) < 33 for c in text):
            raise refuse("the endpoint contains whitespace or control characters")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise refuse("not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise refuse(f"scheme {scheme or 'missing'!r} is not allowed; use https://")
        if "@" in parts.netloc:
            raise refuse("credentials in the URL (user@host) are not allowed")
        if parts.query or parts.fragment:
            raise refuse("query strings and fragments are not allowed in an endpoint")
        host = (parts.hostname or "").lower()
        if not host:
            raise refuse("no host in the endpoint")
        if host.endswith("."):
            raise refuse(f"host {host!r} ends with a dot")
        shown = f"{scheme}://{host}"
        if host in METADATA_HOSTS:
            raise refuse(f"{shown} is a cloud metadata address")
        extra = host in self.extra_hosts
        if not extra:
            if is_ip_literal(host):
                raise refuse(f"{shown}: IP addresses are not allowed; use the resource's DNS name")
            if not host_allowed(host):
                raise refuse(f"{shown} is not an Azure OpenAI / Foundry / OpenAI host (add it to "
                             "TENANTFLOW_ALLOWED_HOSTS to allow it)")
            if scheme != "https":
                raise refuse(f"{shown}: plain http is only allowed for hosts in TENANTFLOW_ALLOWED_HOSTS")
        netloc = host if port is None else f"{host}:{port}"
        if ":" in host:
            netloc = f"[{host}]" if port is None else f"[{host}]:{port}"
        path = parts.path.rstrip("/")
        return f"{scheme}://{netloc}{path}"


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return bool(NUMERIC_HOST.match(host))  # 2130706433, 0x7f.1, 127.1 …


def host_allowed(host: str) -> bool:
    if host in ALLOWED_EXACT:
        return True
    labels = host.split(".")
    if not all(HOST_LABEL.match(label) for label in labels):
        return False
    return any(host.endswith(suffix) and len(host) > len(suffix) for suffix in ALLOWED_SUFFIXES)
