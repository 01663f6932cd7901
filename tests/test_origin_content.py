"""Static content through a real origin server (aiohttp TestServer on a free port)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

import origin.content
from geoconfig.cdnconfig import ContentRule, OriginSettings
from geoconfig.httpdate import format_http_date
from geoconfig.topology import load_topology
from origin.app import create_app
from origin.state import STATE
from origin.virtual import VIRTUAL_MTIME, expected_bytes

T = 1_700_000_000  # mtime of every test file: old enough for Last-Modified to be strong
LM = format_http_date(T)
DATA = bytes(range(256)) * 4  # /data.bin, 1024 bytes
LARGE = hashlib.shake_256(b"large").digest(600 * 1024)  # spans several read chunks
RULES = (
    ContentRule("/static/*", "public, max-age=86400", None, "static"),
    ContentRule("/static/*.css", "no-cache", None, "never-used"),
    ContentRule("/*.html", "public, max-age=60", "max-age=600", "html"),
    ContentRule("/big/*", "public, max-age=3600", None, "big"),
)
DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.toml"


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def make_root(base: Path) -> Path:
    root = base / "root"
    files = {
        "index.html": b"<h1>home</h1>\n",
        "data.bin": DATA,
        "large.bin": LARGE,
        "empty.txt": b"",
        "static/style.css": b"body{}\n",
        "docs/index.html": b"<h1>docs</h1>\n",
        "nodir/readme.txt": b"no index here\n",
        ".hidden": b"secret\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_bytes(b"outside secret\n")
    (base / "secret.txt").write_bytes(b"top secret\n")
    (root / "escape.txt").symlink_to(base / "outside" / "secret.txt")
    (root / "escape_dir").symlink_to(base / "outside", target_is_directory=True)
    (root / "alias.bin").symlink_to(root / "data.bin")
    for path in root.rglob("*"):
        os.utime(path, (T, T), follow_symlinks=False)
    return root


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    app = create_app("origin-t", OriginSettings(make_root(tmp_path), RULES))
    async with TestClient(TestServer(app)) as c:
        yield c


async def get(client: TestClient, path: str, method: str = "GET",
              **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with client.request(method, path, headers=headers) as r:
        return r.status, r.headers.copy(), await r.read()


async def test_validators_present_and_stable(client: TestClient) -> None:
    s1, h1, b1 = await get(client, "/data.bin")
    s2, h2, _ = await get(client, "/data.bin")
    assert (s1, s2) == (200, 200)
    assert b1 == DATA
    assert h1["ETag"] == h2["ETag"] == etag_of(DATA)
    assert h1["Last-Modified"] == h2["Last-Modified"] == LM
    assert h1["Accept-Ranges"] == "bytes"
    assert h1["Content-Length"] == "1024"
    assert h1["Content-Type"] == "application/octet-stream"
    assert h1["X-Origin"] == "origin-t" and h1["Server"] == "geoedge-origin" and "Date" in h1


async def test_files_are_hashed_once_until_they_change(client: TestClient, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = origin.content.hash_fd

    def counting(fd: int, size: int) -> str:
        calls.append(size)
        return real(fd, size)

    monkeypatch.setattr(origin.content, "hash_fd", counting)
    for _ in range(3):
        assert (await get(client, "/data.bin"))[0] == 200
    assert calls == [1024]
    path = tmp_path / "root" / "data.bin"
    path.write_bytes(b"changed")
    os.utime(path, (T + 5, T + 5))
    status, headers, body = await get(client, "/data.bin")
    assert (status, body, headers["ETag"]) == (200, b"changed", etag_of(b"changed"))
    assert headers["Last-Modified"] == format_http_date(T + 5)
    assert calls == [1024, 7]


CONDITIONAL = [
    # (case, method, headers, status)
    ("inm same", "GET", {"If-None-Match": etag_of(DATA)}, 304),
    ("inm weak", "GET", {"If-None-Match": "W/" + etag_of(DATA)}, 304),
    ("inm star", "GET", {"If-None-Match": "*"}, 304),
    ("inm list", "GET", {"If-None-Match": '"x", ' + etag_of(DATA)}, 304),
    ("inm other", "GET", {"If-None-Match": '"x"'}, 200),
    ("inm head", "HEAD", {"If-None-Match": etag_of(DATA)}, 304),
    ("if-match same", "GET", {"If-Match": etag_of(DATA)}, 200),
    ("if-match star", "GET", {"If-Match": "*"}, 200),
    ("if-match other", "GET", {"If-Match": '"x"'}, 412),
    ("if-match weak", "GET", {"If-Match": "W/" + etag_of(DATA)}, 412),
    ("if-match head", "HEAD", {"If-Match": '"x"'}, 412),
    ("ius equal", "GET", {"If-Unmodified-Since": LM}, 200),
    ("ius earlier", "GET", {"If-Unmodified-Since": format_http_date(T - 1)}, 412),
    ("ius invalid", "GET", {"If-Unmodified-Since": "soon"}, 200),
    ("ims equal", "GET", {"If-Modified-Since": LM}, 304),
    ("ims later", "GET", {"If-Modified-Since": format_http_date(T + 60)}, 304),
    ("ims earlier", "GET", {"If-Modified-Since": format_http_date(T - 1)}, 200),
    ("ims invalid", "GET", {"If-Modified-Since": "yesterday"}, 200),
    ("ims head", "HEAD", {"If-Modified-Since": LM}, 304),
    ("inm beats ims", "GET", {"If-None-Match": '"x"', "If-Modified-Since": LM}, 200),
    ("if-match beats inm", "GET", {"If-Match": '"x"', "If-None-Match": "*"}, 412),
    ("ius beats inm", "GET", {"If-Unmodified-Since": format_http_date(T - 1),
                              "If-None-Match": etag_of(DATA)}, 412),
]


@pytest.mark.parametrize(("method", "headers", "status"), [c[1:] for c in CONDITIONAL],
                         ids=[c[0] for c in CONDITIONAL])
async def test_conditional_requests(client: TestClient, method: str, headers: dict[str, str],
                                    status: int) -> None:
    got, h, body = await get(client, "/data.bin", method, **headers)
    assert got == status
    assert h["X-Origin"] == "origin-t"
    if status == 200 and method == "GET":
        assert body == DATA
    if status in (304, 412):
        assert body == b"" if status == 304 else b"precondition failed\n"


async def test_304_carries_the_cache_metadata_and_no_body(client: TestClient) -> None:
    _, full, _ = await get(client, "/index.html")
    status, h, body = await get(client, "/index.html", **{"If-None-Match": full["ETag"]})
    assert (status, body) == (304, b"")
    for name in ("ETag", "Last-Modified", "Cache-Control", "CDN-Cache-Control", "Surrogate-Key"):
        assert h[name] == full[name], name
    assert h["Cache-Control"] == "public, max-age=60"
    assert "Date" in h and h["X-Origin"] == "origin-t"
    assert "Content-Type" not in h and h.get("Content-Length", "0") == "0"


async def test_412_and_416_carry_no_cache_headers(client: TestClient) -> None:
    for headers, status in (({"If-Match": '"x"'}, 412), ({"Range": "bytes=99999-"}, 416)):
        got, h, _ = await get(client, "/index.html", **headers)
        assert got == status
        assert not {"Cache-Control", "Surrogate-Key", "CDN-Cache-Control"} & set(h)


RANGES = [
    # (case, path, headers, status, expected body slice or None for the full body)
    ("first bytes", "/data.bin", {"Range": "bytes=0-9"}, 206, slice(0, 10)),
    ("middle", "/data.bin", {"Range": "bytes=100-199"}, 206, slice(100, 200)),
    ("open end", "/data.bin", {"Range": "bytes=1000-"}, 206, slice(1000, 1024)),
    ("suffix", "/data.bin", {"Range": "bytes=-24"}, 206, slice(1000, 1024)),
    ("clipped", "/data.bin", {"Range": "bytes=1020-5000"}, 206, slice(1020, 1024)),
    ("coalesced", "/data.bin", {"Range": "bytes=0-4,5-9"}, 206, slice(0, 10)),
    ("multi ignored", "/data.bin", {"Range": "bytes=0-1,10-11"}, 200, None),
    ("invalid ignored", "/data.bin", {"Range": "bytes=9-1"}, 200, None),
    ("unit ignored", "/data.bin", {"Range": "items=0-1"}, 200, None),
    ("if-range etag", "/data.bin", {"Range": "bytes=0-9", "If-Range": etag_of(DATA)}, 206,
     slice(0, 10)),
    ("if-range date", "/data.bin", {"Range": "bytes=0-9", "If-Range": LM}, 206, slice(0, 10)),
    ("if-range other etag", "/data.bin", {"Range": "bytes=0-9", "If-Range": '"x"'}, 200, None),
    ("if-range weak", "/data.bin", {"Range": "bytes=0-9", "If-Range": "W/" + etag_of(DATA)},
     200, None),
    ("if-range old date", "/data.bin",
     {"Range": "bytes=0-9", "If-Range": format_http_date(T - 1)}, 200, None),
    ("across chunks", "/large.bin", {"Range": "bytes=200000-400000"}, 206,
     slice(200000, 400001)),
    ("large suffix", "/large.bin", {"Range": "bytes=-300000"}, 206, slice(-300000, None)),
]


@pytest.mark.parametrize(("path", "headers", "status", "part"), [c[1:] for c in RANGES],
                         ids=[c[0] for c in RANGES])
async def test_ranges(client: TestClient, path: str, headers: dict[str, str], status: int,
                      part: slice | None) -> None:
    data = DATA if path == "/data.bin" else LARGE
    got, h, body = await get(client, path, **headers)
    assert got == status
    assert h["Accept-Ranges"] == "bytes" and h["ETag"] == etag_of(data)
    if part is None:
        assert body == data and "Content-Range" not in h
    else:
        start, stop, _ = part.indices(len(data))
        assert body == data[part]
        assert h["Content-Range"] == f"bytes {start}-{stop - 1}/{len(data)}"
        assert h["Content-Length"] == str(stop - start)


async def test_unsatisfiable_range(client: TestClient) -> None:
    status, h, _ = await get(client, "/data.bin", Range="bytes=1024-")
    assert status == 416
    assert h["Content-Range"] == "bytes */1024"
    assert h["X-Origin"] == "origin-t"
    status, _, body = await get(client, "/data.bin", Range="bytes=1024-", **{"If-Range": '"x"'})
    assert (status, body) == (200, DATA)


async def test_empty_file(client: TestClient) -> None:
    status, h, body = await get(client, "/empty.txt")
    assert (status, body, h["Content-Length"]) == (200, b"", "0")
    assert h["Content-Type"] == "text/plain; charset=utf-8"
    assert (await get(client, "/empty.txt", Range="bytes=0-"))[0] == 416
    assert (await get(client, "/empty.txt", Range="bytes=-5"))[0] == 200


@pytest.mark.parametrize("path", ["/data.bin", "/large.bin", "/index.html", "/big/64k.bin"])
async def test_head_has_the_get_headers_and_no_body(client: TestClient, path: str) -> None:
    _, get_headers, get_body = await get(client, path)
    status, head_headers, head_body = await get(client, path, "HEAD")
    assert (status, head_body) == (200, b"")
    get_headers.pop("Date")
    head_headers.pop("Date")
    assert head_headers == get_headers
    assert head_headers["Content-Length"] == str(len(get_body))
    ranged = await get(client, path, "HEAD", Range="bytes=0-9")
    assert ranged[0] == 200 and "Content-Range" not in ranged[1]


@pytest.mark.parametrize(("path", "cache_control", "cdn", "key"), [
    ("/static/style.css", "public, max-age=86400", None, "static"),
    ("/index.html", "public, max-age=60", "max-age=600", "html"),
    ("/", "public, max-age=60", "max-age=600", "html"),  # matched as /index.html
    ("/docs/", "public, max-age=60", "max-age=600", "html"),
    ("/big/1k.bin", "public, max-age=3600", None, "big"),
    ("/data.bin", None, None, None),
])
async def test_rules(client: TestClient, path: str, cache_control: str | None, cdn: str | None,
                     key: str | None) -> None:
    status, h, _ = await get(client, path)
    assert status == 200
    assert (h.get("Cache-Control"), h.get("CDN-Cache-Control"), h.get("Surrogate-Key")) == (
        cache_control, cdn, key)


@pytest.mark.parametrize(("path", "body"), [
    ("/", b"<h1>home</h1>\n"),
    ("/docs/", b"<h1>docs</h1>\n"),
    ("/docs", b"<h1>docs</h1>\n"),
    ("/alias.bin", DATA),  # a symlink that stays inside the root
])
async def test_directories_and_inside_symlinks(client: TestClient, path: str,
                                               body: bytes) -> None:
    status, h, got = await get(client, path)
    assert (status, got) == (200, body)
    if path != "/alias.bin":
        assert h["Content-Type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize("path", ["/nodir/", "/nodir", "/missing.txt", "/static/missing.css"])
async def test_missing_is_404(client: TestClient, path: str) -> None:
    status, h, body = await get(client, path)
    assert (status, body) == (404, b"not found\n")
    assert h["X-Origin"] == "origin-t"
    assert "Cache-Control" not in h


async def raw_request(client: TestClient, target: str, method: str = "GET") -> tuple[int, bytes]:
    """Send ``target`` byte for byte (aiohttp's client would normalize it)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("target", [
    "/../secret.txt", "/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/%2e%2e/secret.txt",
    "/static/../../secret.txt", "/static/%2e%2e/%2e%2e/secret.txt", "/.%2e/secret.txt",
    "//etc/passwd", "/%2fetc/passwd", "/%2Fetc%2Fpasswd", "/..%2fsecret.txt",
    "/..%5csecret.txt", "/escape.txt", "/escape_dir/secret.txt", "/.hidden", "/static/..",
    "/./index.html", "/index.html%00.txt", "/static//style.css",
])
async def test_traversal_is_404(client: TestClient, target: str) -> None:
    status, body = await raw_request(client, target)
    assert status == 404, target
    assert b"secret" not in body


async def test_raw_request_sees_normal_files(client: TestClient) -> None:
    assert await raw_request(client, "/static/style.css") == (200, b"body{}\n")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_on_files_are_405(client: TestClient, method: str) -> None:
    async with client.request(method, "/data.bin", data=b"x") as r:
        assert r.status == 405
        assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert r.headers["X-Origin"] == "origin-t"


@pytest.mark.parametrize("path", ["/big/1k.bin", "/big/64k.bin", "/big/5mib.bin"])
async def test_virtual_files(client: TestClient, path: str) -> None:
    status, h, body = await get(client, path)
    expected = expected_bytes(path)
    assert (status, body == expected) == (200, True)
    assert h["ETag"] == etag_of(expected)
    assert h["Last-Modified"] == format_http_date(VIRTUAL_MTIME)
    assert h["Content-Type"] == "application/octet-stream"
    assert (await get(client, path, **{"If-None-Match": h["ETag"]}))[0] == 304


async def test_virtual_file_ranges(client: TestClient) -> None:
    data = expected_bytes("/big/5mib.bin")
    status, h, body = await get(client, "/big/5mib.bin", Range="bytes=5000000-5000099")
    assert (status, body) == (206, data[5000000:5000100])
    assert h["Content-Range"] == f"bytes 5000000-5000099/{len(data)}"
    status, _, body = await get(client, "/big/5mib.bin", Range="bytes=-7",
                                **{"If-Range": format_http_date(VIRTUAL_MTIME)})
    assert (status, body) == (206, data[-7:])
    assert (await get(client, "/big/1k.bin", Range="bytes=1024-"))[1]["Content-Range"] == (
        "bytes */1024")


async def test_validators_agree_across_origins(tmp_path: Path) -> None:
    """Two origins serving the same bytes give the same validators (edges can mix them)."""
    root = make_root(tmp_path)
    seen = []
    for name in ("a", "b"):
        async with TestClient(TestServer(create_app(name, OriginSettings(root)))) as c:
            _, h1, _ = await get(c, "/data.bin")
            _, h2, _ = await get(c, "/big/5mib.bin", "HEAD")
            seen.append((h1["ETag"], h1["Last-Modified"], h2["ETag"], h2["Last-Modified"]))
            assert h1["X-Origin"] == name
    assert seen[0] == seen[1]


async def test_no_root_serves_only_virtual_files_and_api() -> None:
    async with TestClient(TestServer(create_app("bare", OriginSettings()))) as c:
        assert (await get(c, "/index.html"))[0] == 404
        assert (await get(c, "/"))[0] == 404
        assert (await get(c, "/big/1k.bin"))[0] == 200
        assert (await get(c, "/healthz"))[0] == 200
        assert c.app[STATE].root is None


async def test_demo_content() -> None:
    settings = load_topology(DEMO).cdn.origin
    async with TestClient(TestServer(create_app("origin-1", settings))) as c:
        status, h, body = await get(c, "/")
        assert status == 200 and b"geoedge" in body
        assert h["Surrogate-Key"] == "html"
        status, h, body = await get(c, "/static/logo.png")
        assert (status, h["Content-Type"]) == (200, "image/png")
        assert body.startswith(b"\x89PNG\r\n\x1a\n")
        status, h, _ = await get(c, "/static/style.css")
        assert (status, h["Cache-Control"]) == (200, "public, max-age=86400")
        status, h, _ = await get(c, "/big/5mib.bin", "HEAD")
        assert (status, h["Content-Length"], h["Surrogate-Key"]) == (200, "5242880", "big")
