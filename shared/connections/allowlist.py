"""Which model endpoints a connection may reach (checked when a credential is written and again at every use).

Allowed: `https://<label…><suffix>` for the Microsoft-controlled Azure OpenAI / Foundry / Azure AI suffixes below
(at least one label before the suffix), exactly `https://api.openai.com`, suffixes named in
TENANTFLOW_ALLOWED_HOST_SUFFIXES (customer-named ones such as `azure-api.net`, where anyone may register a name, are
never allowed by default), and hosts named in TENANTFLOW_ALLOWED_HOSTS (which alone may also use plain http, IP
addresses, and addresses that are not public, e.g. `127.0.0.1` for the local emulator).

At connection time (shared/connections/outbound.py) every address a host name resolves to is checked with
`address_refusal` — the same rules as for literals — unless the host is listed in TENANTFLOW_ALLOWED_HOSTS.

Refused, with a one-line `StepFailure(code="endpoint_refused")` naming the reason: schemes other than http(s),
plain http outside the extra hosts, `user:pass@`, query strings and fragments, IP literals in any notation
(dotted, decimal `2130706433`, hex `0x7f.1`, octal, IPv6), cloud metadata / link-local addresses (even when
listed), hosts outside the list, suffix tricks, trailing dots, non-ASCII hosts, whitespace and backslashes.

Normal form: `scheme://host[:port][/path]`, lowercase host, default port and trailing slash dropped.

Paths: an endpoint is a base URL, so a path is refused unless it is a known base path — `/openai`, `/openai/v1`,
`/v1` or `/models`. APIM gateways (`*.azure-api.net`, once allowed) and extra hosts may also use any plain path
prefix (APIM API suffixes are chosen by whoever publishes the API), made of letters, digits and `. _ ~ -`. Refusing
rather than silently stripping: a pasted `…/openai/deployments/x/chat/completions` is a mistake the user should see.
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
)
APIM_SUFFIX = ".azure-api.net"
ALLOWED_EXACT = ("api.openai.com",)
KNOWN_BASE_PATHS = ("/openai", "/openai/v1", "/v1", "/models")
METADATA_NAMES = ("metadata.google.internal", "metadata.azure.com", "metadata", "instance-data",
                  "instance-data.ec2.internal")
METADATA_IPS = tuple(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS / Azure IMDS / GCP / OCI
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure WireServer
))
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
DEFAULT_PORTS = {"https": 443, "http": 80}
HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NUMERIC_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
MAX_LENGTH = 2048
MAX_PATH_SEGMENTS = 8
MAX_MEMO = 1024


def refuse(shown: str, reason: str) -> StepFailure:
    prefix = f"endpoint refused: {shown}: " if shown else "endpoint refused: "
    return StepFailure(prefix + reason, "endpoint_refused")


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names if it is an IP literal in any notation a resolver accepts (inet_aton rules:
    1-4 parts, each decimal, 0x-hex or 0-octal), else None."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(NUMERIC_PART.match(p) for p in parts):
        return None
    try:
        values = [int(p, 16) if p.startswith("0x") else int(p, 8) if len(p) > 1 and p[0] == "0" else int(p)
                  for p in (p if p != "0x" else "0x0" for p in parts)]
    except ValueError:  # e.g. "09": not octal — still numeric, so still an IP-ish literal; refuse it as one
        return ipaddress.IPv4Address(0)
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return ipaddress.IPv4Address(0)  # out of range: not resolvable, but clearly meant as an address
    number = 0
    for v in head:
        number = number * 256 + v
    number = number * 256 ** (5 - len(values)) + last
    return ipaddress.IPv4Address(number)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and that a packet to it may reach: IPv4-mapped, IPv4-compatible,
    6to4, Teredo (client) and NAT64 (64:ff9b::/96) forms."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) >= 2 ** 24):  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_metadata_address(ip: IPAddress) -> bool:
    inner = embedded_ipv4(ip)
    return any(a in METADATA_IPS or a.is_link_local for a in (ip, inner) if a is not None)


def address_refusal(ip: IPAddress) -> str | None:
    """Why a model endpoint may not be reached at this address, or None for a public unicast address. The same
    rules hold for literals and for what a host name resolves to; an embedded IPv4 address is checked too."""
    if is_metadata_address(ip):
        return "a cloud metadata or link-local address"
    for address in (embedded_ipv4(ip), ip):  # the embedded IPv4 address first: it names where a packet goes
        if address is None:
            continue
        if address.is_unspecified:
            return "an unspecified address"
        if address.is_loopback:
            return "a loopback address"
        if address.is_multicast:
            return "a multicast address"
        if address in CGNAT:
            return "a shared (CGNAT) address"
        if address.is_private:
            return "a private address"
        if address.is_reserved or not address.is_global:
            return "not a public address"
    return None


def parse_suffix(entry: str) -> str:
    """`azure-api.net`, `.azure-api.net` or `*.azure-api.net` → `.azure-api.net`; two labels at least."""
    text = entry.strip().lower().removeprefix("*").removeprefix(".")
    labels = text.split(".")
    if len(labels) < 2 or not all(HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"TENANTFLOW_ALLOWED_HOST_SUFFIXES: {entry!r} is not a DNS suffix of two labels or more "
                         "(e.g. azure-api.net)")
    return "." + text


def parse_extra_host(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port`, a bare IPv6 address, or a URL → (host, port or None = any)."""
    text = entry.strip().lower()
    if "://" in text:
        try:
            parts = urlsplit(text)
            return (parts.hostname or "").rstrip("."), parts.port
        except ValueError:
            raise ValueError(f"TENANTFLOW_ALLOWED_HOSTS: {entry!r} is not a host or URL") from None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"TENANTFLOW_ALLOWED_HOSTS: {entry!r} has an invalid port")
    return host.rstrip("."), int(port_text) if port_text else None


class EndpointAllowlist(EndpointPolicy):
    def __init__(self, extra_hosts: tuple[str, ...] = (), extra_suffixes: tuple[str, ...] = ()) -> None:
        self.extra: set[tuple[str, int | None]] = {parse_extra_host(h) for h in extra_hosts if h and h.strip()}
        self.extra_hosts = tuple(sorted({host for host, _ in self.extra}))
        self.suffixes = ALLOWED_SUFFIXES + tuple(
            s for s in dict.fromkeys(parse_suffix(e) for e in extra_suffixes if e.strip()) if s not in ALLOWED_SUFFIXES)
        self.memo: dict[str, str] = {}  # accepted endpoint → normal form (checks run on every model call)

    def is_extra(self, host: str, port: int | None) -> bool:
        return (host, None) in self.extra or (host, port) in self.extra

    def host_allowed(self, host: str) -> bool:
        if host in ALLOWED_EXACT:
            return True
        if not all(HOST_LABEL.match(label) for label in host.split(".")):
            return False
        return any(host.endswith(suffix) and len(host) > len(suffix) for suffix in self.suffixes)

    def address_refusal(self, host: str, port: int | None, address: str) -> str | None:
        """Why `host` may not be reached at `address` (what it resolved to, or the literal), or None. A host listed
        in TENANTFLOW_ALLOWED_HOSTS may reach anything but a metadata / link-local address."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
        if is_metadata_address(ip):
            return "a cloud metadata or link-local address"
        if self.is_extra(host.lower().rstrip("."), port):
            return None
        return address_refusal(ip)

    def check(self, endpoint: str) -> str:
        cached = self.memo.get(endpoint) if isinstance(endpoint, str) else None
        if cached is not None:
            return cached
        normal = self.normalise(endpoint)
        if len(self.memo) >= MAX_MEMO:
            self.memo.clear()
        self.memo[endpoint] = normal
        return normal

    def normalise(self, endpoint: str) -> str:
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise refuse("", "empty endpoint")
        text = endpoint.strip()
        if len(text) > MAX_LENGTH:
            raise refuse("", f"longer than {MAX_LENGTH} characters")
        if any(ord(c) < 33 or ord(c) == 127 for c in text) or "\\" in text:
            raise refuse("", "whitespace, control characters or backslashes in the URL")
        if not text.isascii():
            raise refuse("", "non-ASCII characters in the URL (write an internationalised host in punycode)")
        if "://" not in text:
            raise refuse("", "no scheme; write it as https://<host>")
        try:
            parts = urlsplit(text)
        except ValueError:
            raise refuse("", "not a valid URL") from None
        scheme = parts.scheme.lower()
        userinfo, at, hostport = parts.netloc.rpartition("@")
        host_shown = hostport.lower()
        shown = f"{scheme}://{host_shown[:255]}"
        if scheme not in DEFAULT_PORTS:
            raise refuse(shown, f"scheme {scheme!r} is not allowed; use https://")
        if at:
            raise refuse(shown, "credentials in the URL (user:password@host) are not allowed")
        if "?" in text or "#" in text:
            raise refuse(shown, "query strings and fragments are not allowed in an endpoint")
        try:
            port = parts.port
        except ValueError:
            raise refuse(shown, "invalid port") from None
        host = (parts.hostname or "").lower()
        if not host:
            raise refuse(shown, "no host")
        if host.endswith("."):
            raise refuse(shown, "the host ends with a dot; drop it")
        ip = parse_ip(host)
        if host in METADATA_NAMES or (ip is not None and is_metadata_address(ip)):
            raise refuse(shown, "a cloud metadata or link-local address is never allowed")
        if not self.is_extra(host, port):
            if ip is not None:
                raise refuse(shown, "IP addresses are not allowed; use the resource's DNS name (or list the "
                                    "host in TENANTFLOW_ALLOWED_HOSTS)")
            if "." + host in self.suffixes:
                raise refuse(shown, f"the resource name is missing: write https://<resource>.{host}")
            if not self.host_allowed(host):
                raise refuse(shown, "not an Azure OpenAI / Foundry / OpenAI host (list it in "
                                    "TENANTFLOW_ALLOWED_HOSTS, or its suffix in TENANTFLOW_ALLOWED_HOST_SUFFIXES)")
            if scheme != "https":
                raise refuse(shown, "plain http is only allowed for hosts in TENANTFLOW_ALLOWED_HOSTS; use https://")
            free_path = host.endswith(APIM_SUFFIX)
        else:
            free_path = True
        path = self.check_path(shown, parts.path, free_path)
        netloc = f"[{host}]" if ":" in host else host
        if port is not None and port != DEFAULT_PORTS[scheme]:
            netloc = f"{netloc}:{port}"
        return f"{scheme}://{netloc}{path}"

    @staticmethod
    def check_path(shown: str, raw: str, free: bool) -> str:
        path = raw.rstrip("/")
        if not path:
            return ""
        if path.lower() in KNOWN_BASE_PATHS:
            return path.lower()
        allowed = ", ".join(KNOWN_BASE_PATHS)
        if not free:
            raise refuse(shown, f"path {path!r} is not a known base path ({allowed}); give the resource's base "
                                "URL, not an operation URL")
        segments = path[1:].split("/")
        if len(segments) > MAX_PATH_SEGMENTS or not all(
                PATH_SEGMENT.match(s) and s not in (".", "..") for s in segments):
            raise refuse(shown, "the path may only hold plain segments of letters, digits and . _ ~ -")
        return path
