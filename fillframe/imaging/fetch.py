"""Getting image bytes from a `data:` URI or an http(s) URL, behind one SSRF guard.

The guard (DESIGN.md, "Security by default"):
- http and https only, a real host, no user name or password, at most 2048 characters;
- the host is resolved once and *every* address it resolves to is checked; the request then
  connects to that exact address (the URL is rewritten to the IP, the `Host` header and the TLS
  SNI/certificate name keep the original name), so a DNS rebind between check and connect
  cannot swap in another address;
- each redirect is re-checked the same way, at most `max_redirects` of them;
- the body is streamed and cut off past `max_bytes`; one deadline covers DNS, connect,
  redirects and body, so a slow or silent server cannot hold a worker.

Address policy: the unspecified address (0.0.0.0/8, ::), multicast and reserved ranges
(240.0.0.0/4, ::/8 ...) are always refused: nothing legitimate lives there, and connecting to
0.0.0.0 reaches the local machine. Loopback, private, link-local (169.254.169.254, the cloud
metadata service, included), shared (100.64.0.0/10) and other non-global ranges are refused
unless `allow_private` is set (local development, tests) or the address lies in one of the
`allowed_networks` an operator trusts explicitly (an internal image store, say).
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import certifi
import httpx

from fillframe.errors import InvalidInput

if TYPE_CHECKING:
    from fillframe.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
USER_AGENT = "fillframe-fetch/0.1"

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Kinds refused even when private addresses are allowed: no legitimate server lives there.
ALWAYS_REFUSED = frozenset({"the unspecified address", "a multicast address", "a reserved address"})
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_DATA_URI = re.compile(r"^data:([^,]*),", re.IGNORECASE)


# --- addresses -------------------------------------------------------------------------------


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form really reaches (mapped, NAT64, 6to4), else `ip` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def address_kind(ip: IPAddress) -> str | None:
    """None for a globally routable address, else what it is ("a private address", ...)."""
    ip = _embedded_ipv4(ip)
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_loopback:  # before reserved: ::1 lies inside the reserved ::/8
        return "a loopback address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a publicly routable address"
    return None


def address_problem(
    ip: IPAddress, allow_private: bool, allowed_networks: Sequence[Network] = ()
) -> str | None:
    """None when `ip` may be fetched, else what it is (see `address_kind`)."""
    kind = address_kind(ip)
    if kind is None or kind in ALWAYS_REFUSED:
        return kind
    if allow_private or any(_embedded_ipv4(ip) in net for net in allowed_networks):
        return None
    return kind


def _refusal(ip: IPAddress, kind: str, host: str | None = None) -> str:
    verdict = "is never allowed" if kind in ALWAYS_REFUSED else "is not allowed"
    embedded = _embedded_ipv4(ip)
    shown = f"{ip} ({embedded})" if embedded != ip else str(ip)
    if host is None or _literal_ip(host) is not None:
        return f"the address {shown} is {kind} and {verdict}"
    return f"{host} resolves to {shown}, which is {kind} and {verdict}"


# --- URL syntax ------------------------------------------------------------------------------


def _literal_ip(host: str) -> IPAddress | None:
    """The address a host names literally, legacy IPv4 spellings (`2130706433`, `0x7f.1`) too."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # getaddrinfo accepts these numeric forms, so the guard must read them the same way.
    if re.fullmatch(r"[0-9a-fx.]+", host) and re.fullmatch(r"[0-9].*", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _url_problem(url: str, allow_private: bool, allowed_networks: Sequence[Network]) -> str | None:
    """None when `url` passes the syntax and literal-address checks, else why not (a clause)."""
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    # Parsers disagree on spaces, control characters and backslashes: refuse them outright.
    if any(ch <= " " or ch == "\\" or ch == "\x7f" for ch in url):
        return "the URL contains spaces, control characters or backslashes"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return "the URL could not be parsed"
    if parsed.scheme not in ("http", "https"):
        return f"only http and https URLs can be fetched, not {parsed.scheme or 'this one'}"
    if parsed.userinfo or "@" in parsed.netloc.decode("ascii", "replace"):
        return "the URL must not contain a user name or password"
    host = parsed.host
    if not host:
        return "the URL has no host"
    port = parsed.port
    if port is not None and not 1 <= port <= 65535:
        return f"the port {port} is out of range"
    if "%" in host:
        return f"the host {host} is not valid"
    ip = _literal_ip(host.rstrip("."))  # some resolvers read `127.0.0.1.` as 127.0.0.1
    if ip is not None:
        problem = address_problem(ip, allow_private, allowed_networks)
        return None if problem is None else _refusal(ip, problem)
    name = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        return f"the host {host} is not a valid host name"
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        return f"the host {host} names this machine and is not allowed"
    return None


def check_url(url: str, allow_private: bool) -> None:
    """Refuse a URL that can never be fetched; cheap, no DNS (used at submit time).

    Raises ValueError with one sentence. Names that merely *resolve* to a private address are
    caught later, by `fetch_url`, which resolves them.
    """
    problem = _url_problem(url, allow_private, ())
    if problem is not None:
        raise ValueError(problem[0].upper() + problem[1:] + ".")


# --- data URIs -------------------------------------------------------------------------------


def size_text(n_bytes: int) -> str:
    """`25 MB` for 25 MiB; exact KB or bytes otherwise."""
    mib, kib = 1024 * 1024, 1024
    if n_bytes >= mib and n_bytes % mib == 0:
        return f"{n_bytes // mib} MB"
    if n_bytes >= kib and n_bytes % kib == 0:
        return f"{n_bytes // kib} KB"
    return f"{n_bytes} bytes"


# Base64 is decoded this many characters at a time, handing the GIL over after each step: a
# thread decoding a 30 MB URI then stalls the event loop's thread for a fraction of a
# millisecond at a time (one b64decode of it holds the GIL for ~100 ms, and the loop with it).
_CHUNK = 1 << 18
_WHITESPACE = b" \t\n\r\v\f"
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_HEADER_SCAN = 512

Text = str | bytes | memoryview


def let_go() -> None:
    """Hand the GIL to a thread waiting for it (the event loop's) now, rather than making it
    wait out the 5 ms switch interval: for threads that work through big buffers in steps."""
    time.sleep(0)


def _ascii(piece: Text) -> bytes:
    if isinstance(piece, str):
        return piece.encode("ascii")  # UnicodeEncodeError (a ValueError): not base64
    return bytes(piece)


def _pieces(payload: Text) -> Iterator[bytes]:
    """The payload in chunks, whitespace dropped, the URL-safe alphabet made standard. The GIL
    is handed on between chunks only: a payload of one chunk (every small image and mask) never
    gives it away, which on a worker's event loop cost a wait of up to the switch interval
    behind its encoding threads, per job and per pass."""
    for start in range(0, len(payload), _CHUNK):
        if start:
            let_go()
        yield _ascii(payload[start : start + _CHUNK]).translate(_URLSAFE_TO_STANDARD, _WHITESPACE)


def _check_base64(payload: Text, encoded_limit: int, too_big: InvalidInput) -> None:
    """A first pass that keeps nothing: raise `too_big` past `encoded_limit` characters (before
    any decoding), ValueError for '=' anywhere but at the end."""
    total = 0
    padded = False
    for piece in _pieces(payload):
        body = piece.rstrip(b"=")
        if b"=" in body or (padded and body):
            raise ValueError("padding before the end")
        padded = padded or len(body) < len(piece)
        total += len(body)
        if total > encoded_limit:
            raise too_big


def _decode_base64(payload: Text) -> bytes:
    """Decode 4-aligned runs of the pieces (one copy into the result at the end)."""
    out: list[bytes] = []
    carry = b""
    for piece in _pieces(payload):
        piece = carry + piece.rstrip(b"=")
        cut = len(piece) - len(piece) % 4
        out.append(binascii.a2b_base64(piece[:cut], strict_mode=True))
        carry = piece[cut:]
    out.append(binascii.a2b_base64(carry + b"=" * (-len(carry) % 4), strict_mode=True))
    return b"".join(out)


def parse_data_uri(uri: Text, max_bytes: int, *, what: str = "image") -> bytes:
    """The bytes of a `data:image/<subtype>[;param=...];base64,<payload>` URI (str, or its ASCII
    bytes as cut from a request body).

    Whitespace inside the payload is ignored and both base64 alphabets are accepted; the
    size is checked before decoding so a huge payload is refused without decoding it. Decoded
    in steps of 1 MB, so a caller may run it in a thread without stalling the event loop.
    """
    try:
        head = _ascii(uri[:_HEADER_SCAN]).decode("ascii")
    except ValueError:
        head = ""
    match = _DATA_URI.match(head)
    if match is None:
        raise InvalidInput(f"The {what} data URI is malformed; expected data:image/...;base64,...")
    params = [p.strip().lower() for p in match.group(1).split(";")]
    mime = params[0]
    if not mime.startswith("image/") or len(mime) <= len("image/"):
        shown = mime or "no media type"
        raise InvalidInput(f"The {what} data URI must have an image/... media type, not {shown}.")
    if params[-1] != "base64":
        raise InvalidInput(f"The {what} data URI must be base64-encoded (;base64,).")
    too_big = InvalidInput(f"The {what} in the data URI exceeds {size_text(max_bytes)}.")
    encoded_limit = (max_bytes + 2) // 3 * 4
    payload = uri[match.end() :]
    # Line breaks add a few percent at most: anything twice the limit is refused unread.
    if len(payload) > 2 * encoded_limit + 1024:
        raise too_big
    try:
        _check_base64(payload, encoded_limit, too_big)
        data = _decode_base64(payload)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"The {what} data URI is not valid base64.") from None
    if not data:
        raise InvalidInput(f"The {what} data URI is empty.")
    if len(data) > max_bytes:
        raise too_big
    return data


# --- fetching --------------------------------------------------------------------------------


class Refused(Exception):
    """A guard or transport failure; its message is a clause ("the host x could not be resolved")."""


class Unresolved(Refused):
    """The host name did not resolve: unlike a refused address, this may pass if tried later."""


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Unresolved(f"the host name {host} could not be resolved") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise Unresolved(f"the host name {host} could not be resolved")
    return addresses


async def checked_addresses(
    url: httpx.URL, allow_private: bool, allowed_networks: Sequence[Network] = ()
) -> list[IPAddress]:
    """Check the URL, resolve its host once and refuse if ANY address is refused (a mixed answer
    is a rebinding trick). Pass the result to `send_pinned`. Raises Refused (Unresolved when the
    name did not resolve)."""
    problem = _url_problem(str(url), allow_private, allowed_networks)
    if problem is not None:
        raise Refused(problem)
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await _resolve(host, port)
    for ip in addresses:
        kind = address_problem(ip, allow_private, allowed_networks)
        if kind is not None:
            raise Refused(_refusal(ip, kind, url.host))
    return addresses


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one costs ~25 ms, far more than a fetch."""
    return ssl.create_default_context(cafile=certifi.where())


async def send_pinned(
    client: httpx.AsyncClient,
    url: httpx.URL,
    addresses: Iterable[IPAddress],
    *,
    method: str = "GET",
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send to `url` connecting to the checked addresses only, in order, first that connects wins.

    The response is streamed: the caller reads and closes it. Redirects are never followed here.
    """
    host_is_name = _literal_ip(url.host) is None
    last_error: httpx.ConnectError | None = None
    for ip in addresses:
        request = client.build_request(
            method,
            url.copy_with(host=str(ip)),
            content=content,
            headers={**(headers or {}), "Host": url.netloc.decode("ascii")},
            # TLS: SNI and certificate check use the name the user gave, not the IP.
            extensions={"sni_hostname": url.raw_host.decode("ascii")} if host_is_name else {},
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise Refused(f"the TLS certificate of {url.host} could not be verified") from exc
            last_error = exc
    raise Refused(f"could not connect to {url.host}") from last_error


async def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    too_big = Refused(f"the response exceeded {size_text(max_bytes)}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise too_big
    return bytes(body)


async def _fetch(
    url: httpx.URL,
    allow_private: bool,
    max_bytes: int,
    max_redirects: int,
    allowed_networks: Sequence[Network],
) -> bytes:
    headers = {"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"}
    async with httpx.AsyncClient(
        headers=headers, follow_redirects=False, trust_env=False, timeout=None, verify=tls_context()
    ) as client:
        for _hop in range(max_redirects + 1):
            addresses = await checked_addresses(url, allow_private, allowed_networks)
            response = await send_pinned(client, url, addresses)
            try:
                if response.is_redirect:
                    location = response.headers["location"]
                    try:
                        url = url.join(location)
                    except (httpx.InvalidURL, ValueError):
                        raise Refused(f"{url.host} redirected to an invalid URL") from None
                    continue
                if not response.is_success:
                    reason = f" {response.reason_phrase}" if response.reason_phrase else ""
                    raise Refused(f"the server answered {response.status_code}{reason}")
                return await _read_limited(response, max_bytes)
            finally:
                await response.aclose()
        raise Refused(f"there were more than {max_redirects} redirects")


async def fetch_url(
    url: str,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
    allowed_networks: Sequence[str | Network] = (),
    what: str = "image",
) -> bytes:
    """The body of an http(s) URL, through the SSRF guard described in this module's docstring.

    allowed_networks: CIDRs trusted even when `allow_private` is False.
    Raises InvalidInput ("Could not fetch image: ...") for every failure.
    """
    networks = [ipaddress.ip_network(net) for net in allowed_networks]
    try:
        # The raw string first: httpx.URL would quietly percent-encode spaces and the like.
        problem = _url_problem(url, allow_private, networks)
        if problem is not None:
            raise Refused(problem)
        parsed = httpx.URL(url)
        async with asyncio.timeout(timeout):
            return await _fetch(parsed, allow_private, max_bytes, max_redirects, networks)
    except Refused as exc:
        raise InvalidInput(f"Could not fetch {what}: {exc}.") from None
    except (TimeoutError, httpx.TimeoutException):
        raise InvalidInput(
            f"Could not fetch {what}: no complete answer within {timeout:g} seconds."
        ) from None
    except httpx.InvalidURL:
        raise InvalidInput(f"Could not fetch {what}: the URL could not be parsed.") from None
    except httpx.HTTPError as exc:
        # Protocol errors, dropped connections, TLS failures: name the kind, not a traceback.
        detail = str(exc) or type(exc).__name__
        raise InvalidInput(f"Could not fetch {what}: {detail}.") from None


async def load_source(value: str, settings: Settings, *, what: str = "image") -> bytes:
    """The bytes behind a request's `image` or `mask` field: a data URI or an http(s) URL."""
    if value[:5].lower() == "data:":
        return parse_data_uri(value, settings.max_image_bytes, what=what)
    if value[:7].lower() == "http://" or value[:8].lower() == "https://":
        return await fetch_url(
            value,
            allow_private=settings.allow_private_urls,
            max_bytes=settings.max_image_bytes,
            timeout=settings.fetch_timeout_seconds,
            max_redirects=settings.max_redirects,
            what=what,
        )
    raise InvalidInput(f"The {what} must be an http(s) URL or a data:image/...;base64 URI.")
