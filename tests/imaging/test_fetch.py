"""The SSRF guard, data URIs and fetch limits, against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from fillframe.errors import InvalidInput
from fillframe.imaging.fetch import (
    Network,
    address_problem,
    check_url,
    fetch_url,
    load_source,
    parse_data_uri,
    send_pinned,
)
from fillframe.settings import Settings
from tests.imaging.conftest import IMAGE_PNG, TlsServer, TrickyServer

MB = 1024 * 1024


def fetch(url: str, **overrides: object) -> bytes:
    options: dict[str, object] = {
        "allow_private": True,
        "max_bytes": 25 * MB,
        "timeout": 10.0,
        "max_redirects": 5,
    }
    options.update(overrides)
    return asyncio.run(fetch_url(url, **options))  # type: ignore[arg-type]


def refused(url: str, **overrides: object) -> str:
    with pytest.raises(InvalidInput) as info:
        fetch(url, **overrides)
    assert info.value.code == "invalid_input"
    assert info.value.message.startswith("Could not fetch image: ")
    return info.value.message


# --- check_url: submit-time syntax and literal addresses ---------------------------------------

PRIVATE_LITERALS = [
    ("http://127.0.0.1/a.png", "loopback"),
    ("http://127.8.9.10/a.png", "loopback"),
    ("http://[::1]/a.png", "loopback"),
    ("http://10.0.0.1/a.png", "private"),
    ("http://172.16.5.4/a.png", "private"),
    ("http://192.168.1.1/a.png", "private"),
    ("http://[fc00::1]/a.png", "private"),
    ("http://[fd12:3456::1]/a.png", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/a.png", "link-local"),
    ("http://100.64.0.1/a.png", "shared"),
    ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
    ("http://[::ffff:a00:1]/a.png", "private"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[64:ff9b::7f00:1]/a.png", "loopback"),
    ("http://2130706433/a.png", "loopback"),  # decimal 127.0.0.1
    ("http://0x7f.1/a.png", "loopback"),
    ("http://127.1/a.png", "loopback"),
    ("http://017700000001/a.png", "loopback"),  # octal
]
ALWAYS_REFUSED = [
    ("http://0.0.0.0/a.png", "unspecified"),
    ("http://0.1.2.3/a.png", "unspecified"),
    ("http://[::]/a.png", "unspecified"),
    ("http://224.0.0.1/a.png", "multicast"),
    ("http://[ff02::1]/a.png", "multicast"),
    ("http://240.0.0.1/a.png", "reserved"),
    ("http://255.255.255.255/a.png", "reserved"),
]


@pytest.mark.parametrize(("url", "kind"), PRIVATE_LITERALS + ALWAYS_REFUSED)
def test_check_url_refuses_non_global_literals(url: str, kind: str) -> None:
    with pytest.raises(ValueError, match=kind) as info:
        check_url(url, allow_private=False)
    assert str(info.value).endswith("is not allowed.") or "never allowed" in str(info.value)


@pytest.mark.parametrize(("url", "kind"), PRIVATE_LITERALS)
def test_check_url_allows_private_literals_when_asked(url: str, kind: str) -> None:
    check_url(url, allow_private=True)


@pytest.mark.parametrize(("url", "kind"), ALWAYS_REFUSED)
def test_unspecified_multicast_reserved_stay_refused_when_private_allowed(url: str, kind: str) -> None:
    with pytest.raises(ValueError, match="never allowed"):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/a.png", "(?i)only http and https"),
        ("file:///etc/passwd", "(?i)only http and https"),
        ("gopher://example.com/", "(?i)only http and https"),
        ("http:///a.png", "no host"),
        ("http://user:secret@example.com/a.png", "user name or password"),
        ("http://example.com@10.0.0.1/a.png", "user name or password"),
        ("http://example.com\\@10.0.0.1/a.png", "backslashes"),
        ("http://exa mple.com/a.png", "spaces"),
        ("http://example.com/a\n.png", "control characters"),
        ("http://example.com:99999/a.png", "port"),
        ("http://[fe80::1%25eth0]/a.png", "not valid"),
        ("http://exa$mple.com/a.png", "not a valid host name"),
        ("http://localhost/a.png", "names this machine"),
        ("http://LOCALHOST./a.png", "names this machine"),
        ("http://images.localhost/a.png", "names this machine"),
        ("https://example.com/" + "a" * 2048, "longer than 2048"),
    ],
)
def test_check_url_refuses_bad_syntax(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/cat.png",
        "http://images.example.org:8080/a/b.jpg?size=large#top",
        "http://93.184.216.34/a.png",
        "https://[2606:4700::6810:84e5]/a.png",
        "https://bücher.example/katze.webp",
        "http://1e100.net/a.png",
    ],
)
def test_check_url_accepts_public_urls(url: str) -> None:
    check_url(url, allow_private=False)


def allowed(ip: str, allow_private: bool, trusted: Sequence[Network] = ()) -> bool:
    return address_problem(ipaddress.ip_address(ip), allow_private, trusted) is None


def test_address_policy_is_one_function() -> None:
    assert allowed("93.184.216.34", allow_private=False)
    assert not allowed("10.1.2.3", allow_private=False)
    assert allowed("10.1.2.3", allow_private=True)
    assert not allowed("0.0.0.0", allow_private=True)
    trusted = [ipaddress.ip_network("10.1.0.0/16")]
    assert allowed("10.1.2.3", False, trusted)
    assert not allowed("10.2.0.1", False, trusted)
    assert not allowed("240.0.0.1", True, [ipaddress.ip_network("240.0.0.0/8")])


# --- data URIs ---------------------------------------------------------------------------------


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_data_uri_roundtrip() -> None:
    assert parse_data_uri(data_uri(IMAGE_PNG), MB) == IMAGE_PNG


def test_data_uri_tolerates_whitespace_params_and_urlsafe_alphabet() -> None:
    b64 = base64.urlsafe_b64encode(IMAGE_PNG).decode().rstrip("=")
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    uri = f"DATA:image/png;name=cat.png;BASE64,{wrapped}"
    assert parse_data_uri(uri, MB) == IMAGE_PNG


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("data:image/png;base64,@@@not base64@@@", "not valid base64"),
        ("data:image/png;base64,iVBORw0KGgo=A", "not valid base64"),
        ("data:text/plain;base64,aGVsbG8=", "image/... media type, not text/plain"),
        ("data:;base64,aGVsbG8=", "not no media type"),
        ("data:image/png,rawbytes", "base64-encoded"),
        ("data:image/png;base64", "malformed"),
        ("data:image/png;base64,", "empty"),
    ],
)
def test_bad_data_uris(uri: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_data_uri(uri, MB)


def test_data_uri_size_limit() -> None:
    with pytest.raises(InvalidInput, match="exceeds 1 KB"):
        parse_data_uri(data_uri(b"x" * 1025), 1024)
    assert len(parse_data_uri(data_uri(b"x" * 1024), 1024)) == 1024


def test_huge_data_uri_refused_before_decoding() -> None:
    # 40 MB of base64 that is not even valid: refused by size, not by the decoder.
    with pytest.raises(InvalidInput, match="exceeds 25 MB"):
        parse_data_uri("data:image/png;base64," + "!" * (40 * MB), 25 * MB)


# --- fetch_url against a real server -----------------------------------------------------------


def test_fetch_ok_sends_the_original_host_header(tricky: TrickyServer) -> None:
    assert fetch(tricky.url("/image.png")) == IMAGE_PNG
    assert fetch(tricky.url("/image.png", host="localhost")) == IMAGE_PNG
    assert [r.host for r in tricky.log] == [
        f"127.0.0.1:{tricky.port}",
        f"localhost:{tricky.port}",  # connected by IP, Host header keeps the name
    ]


def test_loopback_refused_before_any_request(tricky: TrickyServer) -> None:
    message = refused(tricky.url("/image.png"), allow_private=False)
    assert "127.0.0.1 is a loopback address and is not allowed" in message
    message = refused(f"http://[::1]:{tricky.port}/image.png", allow_private=False)
    assert "::1 is a loopback address" in message
    message = refused(tricky.url("/image.png", host="localhost"), allow_private=False)
    assert "localhost names this machine" in message
    assert tricky.log == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
    ],
)
def test_private_literals_refused_at_fetch(url: str) -> None:
    message = refused(url, allow_private=False, timeout=2.0)
    assert "is not allowed" in message


def test_a_name_resolving_to_loopback_is_refused(tricky: TrickyServer) -> None:
    name = socket.gethostname()
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except socket.gaierror:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if all(ipaddress.ip_address(ip).is_global for ip in resolved):
        pytest.skip(f"this machine's name {name!r} resolves to a public address")
    message = refused(tricky.url("/image.png", host=name), allow_private=False)
    assert f"{name} resolves to " in message
    assert "is not allowed" in message
    assert tricky.log == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com\\@127.0.0.1/a.png", "backslashes"),
        ("ftp://example.com/a.png", "only http and https URLs can be fetched, not ftp"),
        ("http://user:pw@example.com/a.png", "user name or password"),
    ],
)
def test_fetch_applies_the_syntax_checks(url: str, reason: str) -> None:
    assert refused(url, allow_private=True).endswith(reason + ".")


def test_unresolvable_host() -> None:
    message = refused("http://no-such-host.invalid/a.png", allow_private=False)
    assert "no-such-host.invalid could not be resolved" in message


def test_connection_refused(tricky: TrickyServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        message = refused(f"http://127.0.0.1:{port}/a.png")
    assert "could not connect to 127.0.0.1" in message


def test_relative_redirect_followed(tricky: TrickyServer) -> None:
    assert fetch(tricky.url("/redirect?to=/image.png")) == IMAGE_PNG
    assert [r.path for r in tricky.log] == ["/redirect?to=/image.png", "/image.png"]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://10.0.0.1/a.png", "10.0.0.1 is a private address and is not allowed"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local"),
        ("http://[::1]:{port}/image.png", "::1 is a loopback address"),
        ("http://127.0.0.2:{port}/image.png", "127.0.0.2 is a loopback address"),
        ("http://localhost:{port}/image.png", "localhost names this machine"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_each_redirect_is_rechecked(tricky: TrickyServer, target: str, reason: str) -> None:
    """The first hop is trusted (127.0.0.1/32 only); where it redirects to is checked again."""
    url = tricky.url("/redirect?to=" + quote(target.format(port=tricky.port), safe=""))
    # The first hop is allowed: the same server serves the image through the same trust.
    assert fetch(tricky.url("/image.png"), allow_private=False, allowed_networks=["127.0.0.1/32"])
    tricky.log.clear()
    message = refused(url, allow_private=False, allowed_networks=["127.0.0.1/32"])
    assert reason in message
    assert len(tricky.log) == 1  # the redirect target was never requested


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]"])
def test_redirect_to_unspecified_refused_even_when_private_allowed(tricky: TrickyServer, host: str) -> None:
    # Connecting to 0.0.0.0 reaches this machine, so this target is live: only the guard stops it.
    target = f"http://{host}:{tricky.port}/image.png"
    message = refused(tricky.url("/redirect?to=" + quote(target, safe="")))
    assert "is the unspecified address and is never allowed" in message
    assert len(tricky.log) == 1


def test_redirect_limit(tricky: TrickyServer) -> None:
    message = refused(tricky.url("/loop"), max_redirects=3)
    assert message.endswith("more than 3 redirects.")
    assert len(tricky.log) == 4


def test_status_error_names_the_status(tricky: TrickyServer) -> None:
    assert refused(tricky.url("/status/404")).endswith("the server answered 404 Not Found.")
    assert "503" in refused(tricky.url("/status/503"))


def test_declared_length_over_limit(tricky: TrickyServer) -> None:
    assert fetch(tricky.url("/big?n=4000"), max_bytes=4000) == b"\0" * 4000
    message = refused(tricky.url("/big?n=4001"), max_bytes=4000)
    assert message.endswith("the response exceeded 4000 bytes.")


def test_endless_body_is_cut_at_the_limit(tricky: TrickyServer) -> None:
    message = refused(tricky.url("/endless"), max_bytes=MB)
    assert message.endswith("the response exceeded 1 MB.")


@pytest.mark.parametrize("path", ["/hang", "/drip"])
def test_deadline_covers_silent_and_dripping_servers(tricky: TrickyServer, path: str) -> None:
    message = refused(tricky.url(path), timeout=0.5)
    assert message.endswith("no complete answer within 0.5 seconds.")


def test_connection_goes_to_the_checked_address_not_a_new_lookup(tricky: TrickyServer) -> None:
    """The pinned request never resolves the name again: here the name cannot resolve at all."""

    async def pinned_get() -> bytes:
        async with httpx.AsyncClient(trust_env=False) as client:
            url = httpx.URL(f"http://no-such-host.invalid:{tricky.port}/image.png")
            response = await send_pinned(client, url, [ipaddress.ip_address("127.0.0.1")])
            try:
                return await response.aread()
            finally:
                await response.aclose()

    assert asyncio.run(pinned_get()) == IMAGE_PNG
    assert [(r.path, r.host) for r in tricky.log] == [("/image.png", f"no-such-host.invalid:{tricky.port}")]


def test_https_keeps_the_name_for_sni_and_verifies_the_certificate(tls_server: TlsServer) -> None:
    message = refused(f"https://localhost:{tls_server.port}/image.png")
    assert message.endswith("the TLS certificate of localhost could not be verified.")
    assert tls_server.sni == ["localhost"]  # connected to 127.0.0.1, introduced as localhost


# --- load_source ---------------------------------------------------------------------------------


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_load_source_dispatches(tricky: TrickyServer, tmp_path: Path) -> None:
    open_settings = settings(tmp_path, allow_private_urls=True)
    assert asyncio.run(load_source(data_uri(IMAGE_PNG), open_settings)) == IMAGE_PNG
    assert asyncio.run(load_source(tricky.url("/image.png"), open_settings)) == IMAGE_PNG
    with pytest.raises(InvalidInput, match=r"Could not fetch mask: .* loopback"):
        asyncio.run(load_source(tricky.url("/image.png"), settings(tmp_path), what="mask"))
    with pytest.raises(InvalidInput, match="exceeds 1 KB"):
        asyncio.run(load_source(data_uri(IMAGE_PNG), settings(tmp_path, max_image_bytes=1024)))
    with pytest.raises(InvalidInput, match="must be an http"):
        asyncio.run(load_source("/etc/passwd", open_settings))
