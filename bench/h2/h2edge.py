"""An edge with an HTTPS listener that speaks HTTP/2 (ALPN "h2") for bench/h2.sh.

The edge's HTTP/1.1 listener starts as ``geoedge edge`` starts it; beside it, on the same app
(one cache), a TLS listener whose connections are ``edge.h2server.H2Protocol``: the listener
helper "sites" adds to the real CLI, minus SNI. IMPL (optional) picks the HTTP/2 layer:
``auto`` (H2Protocol: nghttp2 when built), ``h2lib`` or ``nghttp2``. Prints ``h2 listening on
PORT`` when ready; SIGINT/SIGTERM stop it.

    python bench/h2/h2edge.py TOPOLOGY EDGE_NAME CERT KEY [IMPL]
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys

import uvloop

from edge.h2server import H2LibProtocol, H2Protocol
from edge.main import limits_of, start_edge
from geoconfig.topology import load_topology


def protocol_class(impl: str) -> type[H2Protocol]:
    if impl == "h2lib":
        return H2LibProtocol
    if impl == "nghttp2":
        from edge.h2ng import NgH2Protocol  # ImportError: the extension is not built

        return NgH2Protocol
    if impl != "auto":
        raise SystemExit(f"unknown HTTP/2 layer {impl!r} (auto, h2lib, nghttp2)")
    return H2Protocol


async def main(config: str, name: str, cert: str, key: str, impl: str = "auto") -> None:
    cls = protocol_class(impl)
    topology = load_topology(config)
    running = await start_edge(topology, name, ("127.0.0.1", 0))
    limits = limits_of(topology.cdn.edge)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    loop = asyncio.get_running_loop()
    conns: set[H2Protocol] = set()

    def factory() -> H2Protocol:
        proto = cls(running.app, limits, on_close=conns.discard,
                           limiter=running.limiter)
        conns.add(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx, backlog=1024)
    print(f"h2 listening on {server.sockets[0].getsockname()[1]} ({cls.__name__})", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for proto in list(conns):
        proto.goaway()
    await running.stop()


if __name__ == "__main__":
    uvloop.run(main(*sys.argv[1:6]))
