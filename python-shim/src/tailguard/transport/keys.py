"""Endpoint and CURVE key checks, shared by `attach` (fail early) and `EngineClient` (the socket)."""

from __future__ import annotations

import os

# What a DEALER in this process can reach an engine process over.
SCHEMES = ("tcp://", "ipc://")


def check_endpoint(endpoint: object) -> str:
    """The endpoint if a separate engine process can be reached over it, else `ValueError` naming the fix."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(f"engine endpoint {endpoint!r} is not a ZeroMQ endpoint like 'tcp://127.0.0.1:5599' "
                         "or 'ipc:///tmp/tg.sock'")
    scheme = endpoint.split("://", 1)[0].lower() + "://"
    if scheme in ("http://", "https://"):
        raise ValueError(f"engine endpoint {endpoint!r}: the engine speaks ZeroMQ, not HTTP (the http:// address "
                         "is the live dashboard); use the engine's tcp:// endpoint, e.g. 'tcp://127.0.0.1:5599'")
    if scheme == "inproc://":
        raise ValueError(f"engine endpoint {endpoint!r}: inproc:// only reaches sockets inside this process, and "
                         "the engine is another process; use tcp:// or ipc://")
    if scheme not in SCHEMES:
        raise ValueError(f"engine endpoint {endpoint!r}: unsupported scheme {scheme!r}; use tcp:// or ipc://")
    if not endpoint[len(scheme):]:
        raise ValueError(f"engine endpoint {endpoint!r} has no address after {scheme!r}")
    return endpoint


def curve_keys(server, public, secret) -> tuple[bytes, bytes, bytes] | None:
    """(server public, client public, client secret) as Z85 bytes, from keys or key files; None without CURVE.

    Half a configuration (some keys, not all) is a `ValueError`: it would otherwise connect in plaintext to
    an engine that expects CURVE, or the other way round, and fail only in the engine's log."""
    if server is None and public is None and secret is None:
        return None
    import zmq.auth

    def load(v, want: str) -> bytes | None:
        if v is None:
            return None
        if os.path.isfile(v):
            pub, sec = zmq.auth.load_certificate(v)
            return sec if want == "secret" else pub
        return v.encode() if isinstance(v, str) else bytes(v)

    srv, sec = load(server, "public"), load(secret, "secret")
    pub = load(public, "public") or (load(secret, "public") if secret is not None and os.path.isfile(secret) else None)
    if not (srv and pub and sec) or any(len(k) != 40 for k in (srv, pub, sec)):
        raise ValueError("CURVE needs curve_server_key, curve_public_key and curve_secret_key (40-char Z85 keys or key files)")
    return srv, pub, sec
