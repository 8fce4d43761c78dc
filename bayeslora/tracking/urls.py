"""Tracking and storage URLs: passwords masked before anything is logged, servers checked
for reachability before a run starts.

One place for both, since both read the same URLs (``--tracking-uri``, ``--storage``).
"""

from __future__ import annotations

import socket
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"
REACH_TIMEOUT_S = 3.0  # MLflow's own client retries for minutes before it gives up


# Query parameters that carry a secret (SQLAlchemy passes ?password=... to the driver).
SECRET_QUERY_KEYS = frozenset(
    {"password", "passwd", "pwd", "token", "access_token", "secret", "api_key", "apikey"}
)


def mask_url(url: str | None) -> str | None:
    """``url`` with the password of its ``user:password@`` part, and the values of its
    secret query parameters (``?password=``, ``?token=``, ...), replaced by ``***``. The rest
    is kept as written (no parsing of hosts or ports, so a malformed URL is masked too)."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            masked = [(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs]
            query = urlencode(masked, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # by hand: urlunsplit drops the empty netloc of sqlite:///path
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def check_connects(host: str, port: int, what: str, fix: str, timeout: float = REACH_TIMEOUT_S):
    """A TCP connection to ``host:port`` within ``timeout`` seconds, else a ValueError
    "``what`` is not reachable (why); ``fix``"."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise ValueError(f"{what} is not reachable ({err.strerror or err}); {fix}") from None


def check_reachable(url: str, what: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """For an ``http(s)://`` URL: a TCP connection to its host and port within ``timeout``
    seconds, else a ValueError that names the URL (masked) and the fix. Other schemes
    (files, SQLite) are not servers and pass."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise ValueError(f"{what} {mask_url(url)}: {err}") from None
    check_connects(
        parts.hostname or "",
        port,
        f"{what} {mask_url(url)}",
        "start the server (e.g. mlflow server --host 127.0.0.1 --port 5000) or leave the "
        "option out to use a local SQLite store",
        timeout,
    )
