"""``geoedge demo``: the local demo. For now: the GeoDNS server on 127.0.0.1:5353."""

from __future__ import annotations

import sys

from geodns.main import run_dns

TRY = """\
geoedge demo: GeoDNS for example.test on 127.0.0.1:5353 (udp+tcp); Ctrl-C stops it.
This product includes GeoLite2 data created by MaxMind (CC BY-SA 4.0).

Try, from another terminal:
  dig @127.0.0.1 -p 5353 www.example.test A +subnet=81.2.69.0/24     # GB client  -> eu-west
  dig @127.0.0.1 -p 5353 www.example.test A +subnet=8.8.8.0/24       # US client  -> us-east
  dig @127.0.0.1 -p 5353 www.example.test AAAA +subnet=1.0.16.0/24   # JP client  -> ap-southeast
  dig @127.0.0.1 -p 5353 example.test SOA +norec
  dig @127.0.0.1 -p 5353 nope.example.test A                          # NXDOMAIN + SOA
  .venv/bin/geoedge explain --config {config} 81.2.69.160
"""


def run_demo(config: str) -> int:
    print(TRY.format(config=config), file=sys.stderr, flush=True)
    return run_dns(config, listen=[("127.0.0.1", 5353)], workers=1)
