"""EndpointAllowlist: a table of endpoints → their normal form, or the reason they are refused."""

from __future__ import annotations

import pytest

from shared.connections.allowlist import EndpointAllowlist, parse_ip, parse_suffix
from shared.engine.ports import StepFailure

EXTRA = ("127.0.0.1", "localhost:8765", "[::1]", "gateway.internal")

ACCEPTED = [
    ("https://contoso.openai.azure.com", "https://contoso.openai.azure.com"),
    ("https://contoso.openai.azure.com/", "https://contoso.openai.azure.com"),
    ("  https://contoso.openai.azure.com/  ", "https://contoso.openai.azure.com"),
    ("HTTPS://Contoso.OpenAI.Azure.COM", "https://contoso.openai.azure.com"),
    ("https://contoso.openai.azure.com:443", "https://contoso.openai.azure.com"),
    ("https://contoso.openai.azure.com/openai/v1/", "https://contoso.openai.azure.com/openai/v1"),
    ("https://contoso.openai.azure.com/OpenAI", "https://contoso.openai.azure.com/openai"),
    ("https://my-res.cognitiveservices.azure.com", "https://my-res.cognitiveservices.azure.com"),
    ("https://proj.services.ai.azure.com/models", "https://proj.services.ai.azure.com/models"),
    ("https://westeurope.api.cognitive.microsoft.com", "https://westeurope.api.cognitive.microsoft.com"),
    ("https://x.eastus.inference.ai.azure.com", "https://x.eastus.inference.ai.azure.com"),
    ("https://llama.eastus2.models.ai.azure.com/v1", "https://llama.eastus2.models.ai.azure.com/v1"),
    ("https://apim-1.azure-api.net/tenant-a/openai", "https://apim-1.azure-api.net/tenant-a/openai"),
    ("https://xn--bcher-kva.openai.azure.com", "https://xn--bcher-kva.openai.azure.com"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("https://api.openai.com", "https://api.openai.com"),
    ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
    ("http://127.0.0.1:8765/openai/v1/", "http://127.0.0.1:8765/openai/v1"),
    ("https://127.0.0.1:9000", "https://127.0.0.1:9000"),
    ("http://localhost:8765", "http://localhost:8765"),
    ("http://[::1]:8765", "http://[::1]:8765"),
    ("http://Gateway.Internal:80/llm/v2", "http://gateway.internal/llm/v2"),
]

REFUSED = [
    ("", "empty endpoint"),
    ("ftp://contoso.openai.azure.com", "scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("javascript://contoso.openai.azure.com", "scheme 'javascript' is not allowed"),
    ("contoso.openai.azure.com", "no scheme"),
    ("//contoso.openai.azure.com", "no scheme"),
    ("http://contoso.openai.azure.com", "plain http is only allowed for hosts in TENANTFLOW_ALLOWED_HOSTS"),
    ("https://user:pass@contoso.openai.azure.com", "credentials in the URL"),
    ("https://evil.example@contoso.openai.azure.com", "credentials in the URL"),
    ("https://contoso.openai.azure.com@evil.example", "credentials in the URL"),
    ("https://contoso.openai.azure.com/?x=1", "query strings and fragments"),
    ("https://contoso.openai.azure.com?", "query strings and fragments"),
    ("https://contoso.openai.azure.com#frag", "query strings and fragments"),
    ("https://8.8.8.8", "IP addresses are not allowed"),
    ("https://2130706433", "IP addresses are not allowed"),
    ("https://0x7f.1", "IP addresses are not allowed"),
    ("https://0177.0.0.1", "IP addresses are not allowed"),
    ("https://127.1", "IP addresses are not allowed"),
    ("http://127.0.0.2:8765", "IP addresses are not allowed"),
    ("https://[2001:db8::1]", "IP addresses are not allowed"),
    ("http://169.254.169.254/metadata/instance", "cloud metadata or link-local"),
    ("http://0xa9fea9fe", "cloud metadata or link-local"),
    ("http://2852039166", "cloud metadata or link-local"),
    ("http://[fd00:ec2::254]", "cloud metadata or link-local"),
    ("http://[::ffff:169.254.169.254]", "cloud metadata or link-local"),
    ("http://100.100.100.200", "cloud metadata or link-local"),
    ("http://168.63.129.16", "cloud metadata or link-local"),
    ("http://metadata.google.internal", "cloud metadata or link-local"),
    ("https://metadata.azure.com", "cloud metadata or link-local"),
    ("https://evil.example.com", "not an Azure OpenAI / Foundry / OpenAI host"),
    ("https://evil.openai.azure.com.attacker.net", "not an Azure OpenAI / Foundry / OpenAI host"),
    ("https://contoso-openai.azure.com", "not an Azure OpenAI / Foundry / OpenAI host"),
    ("https://eviloopenai.azure.com", "not an Azure OpenAI / Foundry / OpenAI host"),
    ("https://api.openai.com.evil.net", "not an Azure OpenAI / Foundry / OpenAI host"),
    ("https://evil.api.openai.com", "not an Azure OpenAI / Foundry / OpenAI host"),
    ("https://openai.azure.com", "the resource name is missing"),
    ("https://azure-api.net", "the resource name is missing"),
    ("https://a_b.openai.azure.com", "not an Azure OpenAI / Foundry / OpenAI host"),
    ("https://contoso.openai.azure.com.", "ends with a dot"),
    ("https://bücher.openai.azure.com", "non-ASCII"),
    ("https://contoso.openai.azure.com\\@evil.example", "backslashes"),
    ("https://contoso.openai.azure.com\n.evil.example", "control characters"),
    ("https://contoso .openai.azure.com", "whitespace"),
    ("https://contoso.openai.azure.com:99999", "invalid port"),
    ("https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions", "not a known base path"),
    ("https://contoso.openai.azure.com/anything", "not a known base path"),
    ("https://apim-1.azure-api.net/a/../b", "plain segments"),
    ("https://apim-1.azure-api.net/a%2f..%2fb", "plain segments"),
    ("https://apim-1.azure-api.net/a//b", "plain segments"),
    ("http://localhost:9999", "not an Azure OpenAI / Foundry / OpenAI host"),  # only :8765 is listed
    ("https://" + "a" * 2100 + ".openai.azure.com", "longer than 2048"),
]


@pytest.fixture(scope="module")
def allowlist() -> EndpointAllowlist:
    return EndpointAllowlist(EXTRA, ("azure-api.net",))


@pytest.mark.parametrize("endpoint, normal", ACCEPTED, ids=[e for e, _ in ACCEPTED])
def test_accepted_endpoints_are_normalised(allowlist, endpoint, normal):
    assert allowlist.check(endpoint) == normal
    assert allowlist.check(normal) == normal  # idempotent


@pytest.mark.parametrize("endpoint, reason", REFUSED, ids=[e[:60] for e, _ in REFUSED])
def test_refused_endpoints_name_the_reason(allowlist, endpoint, reason):
    with pytest.raises(StepFailure) as caught:
        allowlist.check(endpoint)
    message = str(caught.value)
    assert caught.value.code == "endpoint_refused"
    assert reason in message
    assert message.startswith("endpoint refused: ")
    assert "\n" not in message
    if "@" in endpoint:  # userinfo is never echoed
        assert endpoint.split("://", 1)[1].rpartition("@")[0] + "@" not in message
    assert len(message) < 400


def test_extra_hosts_accept_urls_and_bare_ipv6():
    allowlist = EndpointAllowlist(("http://127.0.0.1:8765", "::1"))
    assert allowlist.check("http://127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert allowlist.check("http://[::1]:1234") == "http://[::1]:1234"
    with pytest.raises(StepFailure, match="IP addresses are not allowed"):
        allowlist.check("http://127.0.0.1:8000")


def test_listing_a_metadata_address_does_not_allow_it():
    allowlist = EndpointAllowlist(("169.254.169.254", "metadata.google.internal"))
    for endpoint in ("http://169.254.169.254", "http://metadata.google.internal"):
        with pytest.raises(StepFailure, match="cloud metadata"):
            allowlist.check(endpoint)


def test_without_extra_hosts_the_local_emulator_is_refused():
    with pytest.raises(StepFailure, match="IP addresses are not allowed"):
        EndpointAllowlist().check("http://127.0.0.1:8765")


def test_a_bad_extra_host_setting_fails_fast():
    with pytest.raises(ValueError, match="TENANTFLOW_ALLOWED_HOSTS"):
        EndpointAllowlist(("localhost:http",))


@pytest.mark.parametrize("host, address", [
    ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0177.0.0.01", "127.0.0.1"), ("127.1", "127.0.0.1"),
    ("10.1.257", "10.1.1.1"), ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"), ("contoso", None), ("1.2.3.4.5", None),
])
def test_ip_literals_in_every_notation(host, address):
    ip = parse_ip(host)
    assert (str(ip) if ip is not None else None) == address


def test_customer_named_suffixes_need_the_setting():
    with pytest.raises(StepFailure, match="TENANTFLOW_ALLOWED_HOST_SUFFIXES"):
        EndpointAllowlist().check("https://apim-1.azure-api.net/openai")
    allowed = EndpointAllowlist((), ("*.azure-api.net", ".Azure-API.net"))
    assert allowed.check("https://apim-1.azure-api.net/openai") == "https://apim-1.azure-api.net/openai"
    assert allowed.suffixes.count(".azure-api.net") == 1


@pytest.mark.parametrize("entry", ["net", "*.net", "a..b", "bad_label.example", ""])
def test_suffix_setting_refuses_one_label_or_bad_labels(entry):
    with pytest.raises(ValueError, match="TENANTFLOW_ALLOWED_HOST_SUFFIXES"):
        parse_suffix(entry)


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "a loopback address"), ("::1", "a loopback address"), ("10.0.0.1", "a private address"),
    ("192.168.1.1", "a private address"), ("172.16.0.1", "a private address"), ("fd12::1", "a private address"),
    ("100.64.0.1", "a shared (CGNAT) address"), ("169.254.169.254", "a cloud metadata or link-local address"),
    ("fe80::1", "a cloud metadata or link-local address"), ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"), ("239.1.1.1", "a multicast address"), ("ff02::1", "a multicast address"),
    ("::ffff:10.0.0.1", "a private address"), ("2002:7f00:1::", "a loopback address"),
    ("64:ff9b::7f00:1", "a loopback address"), ("::127.0.0.1", "a loopback address"),
    ("192.0.2.1", "a private address"), ("240.0.0.1", "a private address"), ("2001:db8::1", "a private address"),
])
def test_address_rules_refuse_every_non_public_address(address, reason):
    assert EndpointAllowlist().address_refusal("contoso.openai.azure.com", 443, address) == reason


def test_public_addresses_pass_and_listed_hosts_may_use_any_but_metadata():
    policy = EndpointAllowlist(("localhost", "127.0.0.1:8765"))
    assert policy.address_refusal("contoso.openai.azure.com", 443, "20.42.1.1") is None
    assert policy.address_refusal("contoso.openai.azure.com", 443, "2603:1030::1") is None
    assert policy.address_refusal("localhost", 8765, "127.0.0.1") is None
    assert policy.address_refusal("127.0.0.1", 8765, "127.0.0.1") is None
    assert policy.address_refusal("127.0.0.1", 9999, "127.0.0.1") == "a loopback address"  # other port: not listed
    assert policy.address_refusal("localhost", 80, "169.254.169.254") == "a cloud metadata or link-local address"
