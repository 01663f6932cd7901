"""edge._nghttp2 on its own: bytes from a real h2 client in, events out; responses in, frames
the client reads out. Skipped without the extension, failed under CI (tests/h2util.py)."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from h2util import get_headers, h2_class

CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


@pytest.fixture
def ng() -> Any:
    h2_class("nghttp2")
    from edge import _nghttp2

    return _nghttp2


def client() -> h2.connection.H2Connection:
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False))
    c.initiate_connection()
    return c


def session(ng: Any, hard: int = 256 * 1024) -> Any:
    return ng.Session(100, 16 * 1024, 65535, hard)


def kinds(ng: Any, events: list[tuple]) -> list[tuple]:
    """Events without the header lists' contents and the FLOOD counts that are zero."""
    out: list[tuple] = []
    for e in events:
        if e[0] == ng.REQUEST:
            out.append(("request", e[1], e[3]))
        elif e[0] == ng.FLOOD:
            names = ("resets", "pings", "settings", "priority", "window_updates", "empty")
            out.append(("flood", {n: c for n, c in zip(names, e[1:], strict=True) if c}))
        else:
            name = {ng.DATA: "data", ng.END: "end", ng.CLOSE: "close", ng.GOAWAY: "goaway",
                    ng.CALM: "calm"}[e[0]]
            out.append((name, *e[1:]))
    return out


def get(c: h2.connection.H2Connection, sid: int = 1) -> None:
    c.send_headers(sid, get_headers("/p"), end_stream=True)


def post(c: h2.connection.H2Connection) -> None:
    c.send_headers(1, [(b":method", b"POST"), *get_headers("/p")[1:]])
    c.send_data(1, b"body", end_stream=True)


def pings(c: h2.connection.H2Connection) -> None:
    for i in range(3):
        c.ping(b"%08d" % i)


def reset(c: h2.connection.H2Connection) -> None:
    c.send_headers(1, get_headers("/p"))
    c.reset_stream(1, h2.errors.ErrorCodes.CANCEL)


def empty(c: h2.connection.H2Connection) -> None:
    c.send_headers(1, get_headers("/p"))
    c.send_data(1, b"")


def big_block(c: h2.connection.H2Connection) -> None:
    c.send_headers(1, get_headers("/p", [(b"x-%d" % i, b"v" * 1000) for i in range(20)]),
                   end_stream=True)


@pytest.mark.parametrize(("send", "hard", "expected"), [
    (get, 256 * 1024, [("flood", {"settings": 1}), ("request", 1, True)]),
    (post, 256 * 1024, [("flood", {"settings": 1}), ("request", 1, False), ("data", 1, b"body"),
                        ("end", 1)]),
    (pings, 256 * 1024, [("flood", {"settings": 1, "pings": 3})]),
    (reset, 256 * 1024, [("flood", {"settings": 1, "resets": 1}), ("request", 1, False),
                         ("close", 1, h2.errors.ErrorCodes.CANCEL, False)]),
    (empty, 256 * 1024, [("flood", {"settings": 1, "empty": 1}), ("request", 1, False)]),
    (big_block, 10_000, [("flood", {"settings": 1}),
                         ("calm", "header block over the hard limit")]),
])
def test_events_of_what_a_client_sends(ng, send, hard, expected):
    c = client()
    send(c)
    s = session(ng, hard)
    events, error = s.recv(c.data_to_send())
    assert error is None
    assert kinds(ng, events) == expected


def answers(c: h2.connection.H2Connection, data: bytes) -> list[Any]:
    return c.receive_data(data)


def test_a_response_reaches_the_client_whole(ng):
    c = client()
    get(c)
    s = session(ng)
    events, _ = s.recv(c.data_to_send())
    assert events[-1][2][:4] == get_headers("/p")
    body = b"x" * 100_000  # beyond the 64 KiB window: the rest after WINDOW_UPDATE
    raw = b"HEAD BYTES" + body
    assert s.submit(1, 200, [(b"content-type", b"text/plain"), (b"connection", b"close"),
                             (b"set-cookie", b"a=1")], raw, True, False, 10)
    got: list[Any] = []
    for _ in range(10):
        data, _ = s.send()
        got += answers(c, data)
        for e in got:
            if isinstance(e, h2.events.DataReceived) and e.flow_controlled_length:
                c.acknowledge_received_data(e.flow_controlled_length, 1)
                e.flow_controlled_length = 0
        s.recv(c.data_to_send())
        if any(isinstance(e, h2.events.StreamEnded) for e in got):
            break
    headers = next(e.headers for e in got if isinstance(e, h2.events.ResponseReceived))
    assert headers == [(b":status", b"200"), (b"content-type", b"text/plain"),
                       (b"set-cookie", b"a=1")]  # Connection dropped
    assert b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived)) == body
    assert s.pending(1) == 0


def test_streamed_body_and_pending(ng):
    c = client()
    get(c)
    s = session(ng)
    s.recv(c.data_to_send())
    assert s.submit(1, 200, [], None, False, False)
    assert s.write(1, b"a" * 100, False)
    assert s.pending(1) == 100
    data, _ = s.send()
    assert s.pending(1) == 0
    assert s.write(1, b"b", True)
    more, events = s.send()
    got = answers(c, data + more)
    assert b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived)) == (
        b"a" * 100 + b"b")
    assert any(isinstance(e, h2.events.StreamEnded) for e in got)
    assert [kinds(ng, events or [])[-1][0]] == ["close"]


def test_a_field_over_64_kib_ends_with_enhance_your_calm(ng):
    c = client()
    c.send_headers(1, get_headers("/p", [(b"x-big", b"a" * 300_000)]), end_stream=True)
    s = session(ng)
    s.recv(c.data_to_send())
    data, _ = s.send()
    term = [e for e in answers(c, data) if isinstance(e, h2.events.ConnectionTerminated)]
    assert term and term[0].error_code == CALM
    assert not s.want_io()


def test_a_bad_preface_is_an_error(ng):
    s = session(ng)
    _, error = s.recv(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert error is not None


def test_graceful_goaway_names_the_last_stream(ng):
    c = client()
    get(c, 1)
    get(c, 3)
    s = session(ng)
    s.recv(c.data_to_send())
    assert s.goaway(0) == 3
    data, _ = s.send()
    term = [e for e in answers(c, data) if isinstance(e, h2.events.ConnectionTerminated)]
    assert term[0].error_code == 0 and term[0].last_stream_id == 3
    assert s.want_io()  # the two streams are still open
