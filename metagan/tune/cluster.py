"""Reaching a Ray cluster: the address forms metagan accepts, a bounded reachability check,
the auth token, and the error for a cluster that cannot be used. Imports no Ray.

A cluster whose nodes start with RAY_AUTH_MODE=token (Ray 2.60) requires a token. It is read
from RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (which `ray
get-auth-token --generate` writes); it is never printed, logged or stored.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..config import ConfigError


class ClusterError(RuntimeError):
    """The cluster cannot be used: unreachable, refused the token, or no such job."""


def auth_token() -> str | None:
    """The Ray auth token from the environment or ~/.ray/auth_token (None: none found)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if path.is_file():
        return path.read_text().strip() or None
    return None


def split_host_port(address: str, what: str) -> tuple[str, int]:
    """HOST and PORT of `HOST:PORT` (or `scheme://HOST:PORT`); a ConfigError when malformed."""
    try:
        parsed = urlparse(address if "://" in address else f"//{address}")
        port = parsed.port
    except ValueError:  # an unbalanced "[" (IPv6) or a port that is not a number
        raise ConfigError(f"{what} {address!r}: expected HOST:PORT") from None
    if not parsed.hostname or port is None or not 0 < port < 65536 or parsed.path not in ("", "/"):
        raise ConfigError(f"{what} {address!r}: expected HOST:PORT")
    return parsed.hostname, port


def check_gcs_address(address: str, timeout_s: float = 5.0) -> str:
    """A Ray cluster's GCS address `HOST:PORT` (or ray://HOST:PORT), answering within `timeout_s`.

    Ray's own client retries an unreachable address for minutes; this fails in seconds.
    """
    if address in ("local", "auto"):
        return address
    if "://" in address and not address.startswith("ray://"):
        raise ConfigError(f"--address {address!r}: a search joins a cluster's GCS, HOST:PORT "
                          "(or ray://HOST:PORT); http:// is the dashboard, used by submit")
    host, port = split_host_port(address, "--address")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise ClusterError(f"--address {address}: no Ray cluster answers there "
                           f"({e.strerror or type(e).__name__})") from None
    return address
