"""Signed serving on the wire and its bad input: DO with a small buffer (TC=1 over UDP, the
whole signed answer over TCP), both UDP loops, the C cold path answering signed templates
byte-identical to Python, new signing generations, and keys that are missing, unreadable or
wrong (a zone configured as signed is never served unsigned: the server refuses to start)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import pytest
from dnssecutil import signed_topology
from dnsutil import FAST_UDP_BUILT, NOT_BUILT, UDP_LOOPS, ServerThread

from geoconfig.topology import load_topology
from geoconfig.validate import ConfigError
from geodns.dnssec import keys
from geodns.main import load_engine

ZONE = dns.name.from_text("example.test.")


def _query(name: str, rdtype: str, do: bool = True, payload: int = 1232,
           subnet: str | None = None) -> dns.message.Message:
    options = []
    if subnet:
        addr, prefix = subnet.split("/")
        options.append(dns.edns.ECSOption(addr, int(prefix)))
    q = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do, payload=payload,
                               options=options)
    q.flags &= ~dns.flags.RD
    return q


def _validate(msg: dns.message.Message, keyset) -> int:
    """Validate every RRset of the answer and authority sections; the number validated."""
    done = 0
    for section in (msg.answer, msg.authority):
        sigs = {(s.name, s.covers): s for s in section if s.rdtype == dns.rdatatype.RRSIG}
        for rrset in section:
            if rrset.rdtype != dns.rdatatype.RRSIG:
                dns.dnssec.validate(rrset, sigs[(rrset.name, rrset.rdtype)], {ZONE: keyset})
                done += 1
    return done


@pytest.fixture(scope="module", params=UDP_LOOPS)
def server(request, tmp_path_factory):
    work = tmp_path_factory.mktemp("signed")
    srv = ServerThread(load_engine(signed_topology(work, request.param)),
                       udp_loop=request.param).start()
    keyset = dns.query.tcp(_query("example.test", "DNSKEY"), "127.0.0.1", port=srv.port,
                           timeout=3).answer[0]
    yield srv, keyset
    srv.stop()


@pytest.mark.parametrize("payload", [512, 100, 0])  # below 512 counts as 512 (RFC 6891)
def test_do_with_a_tiny_buffer_truncates_and_tcp_completes(server, payload):
    srv, keyset = server
    plain = dns.query.udp(_query("big.example.test", "TXT", do=False, payload=payload),
                          "127.0.0.1", port=srv.port, timeout=3)
    assert not plain.flags & dns.flags.TC and len(plain.answer) == 1  # fits unsigned
    for _ in range(2):  # again from the caches (C: its wire cache)
        udp = dns.query.udp(_query("big.example.test", "TXT", payload=payload), "127.0.0.1",
                            port=srv.port, timeout=3)
        assert udp.flags & dns.flags.TC and not udp.answer and not udp.authority
        assert udp.ednsflags & dns.flags.DO  # the OPT still goes back
    tcp = dns.query.tcp(_query("big.example.test", "TXT", payload=payload), "127.0.0.1",
                        port=srv.port, timeout=3)
    assert not tcp.flags & dns.flags.TC
    assert _validate(tcp, keyset) == 1


@pytest.mark.parametrize(("name", "rdtype", "subnet"), [
    ("www.example.test", "A", "81.2.69.0/24"), ("www.example.test", "AAAA", "8.8.8.0/24"),
    ("nope.example.test", "A", None), ("www.example.test", "TXT", None),
    ("example.test", "NS", None), ("cdn.example.test", "A", "1.0.16.0/24")])
def test_signed_over_udp_twice_and_tcp(server, name, rdtype, subnet):
    srv, keyset = server
    answers = [dns.query.udp(_query(name, rdtype, subnet=subnet), "127.0.0.1", port=srv.port,
                             timeout=3) for _ in range(2)]
    answers.append(dns.query.tcp(_query(name, rdtype, subnet=subnet), "127.0.0.1",
                                 port=srv.port, timeout=3))
    for msg in answers:
        assert msg.rcode() == 0 and msg.flags & dns.flags.AA
        assert _validate(msg, keyset) >= 1
    assert answers[0].answer == answers[1].answer


def test_cold_path_serves_signed_templates_byte_identical(tmp_path):
    if not FAST_UDP_BUILT:
        pytest.skip(NOT_BUILT)
    from geodns import _fastudp

    engine = load_engine(signed_topology(tmp_path))
    subnets = [f"81.2.{i}.0/24" for i in range(60, 80)] + [f"8.8.{i}.0/24" for i in range(8)]
    answered = {True: 0, False: 0}
    for do in (True, False):
        for subnet in subnets:
            data = _query("www.example.test", "A", do=do, subnet=subnet).to_wire()
            fast = _fastudp.answer_common(data, engine.fast_state())
            python, _ = engine.respond_uncached(data, "127.0.0.1", False)
            if fast is not None:
                answered[do] += 1
                assert fast == python
            assert (b"\x00\x2e" in python) is do  # RRSIG (type 46) only with DO
    # one Python answer per template (name, type, class + DO, map value), then C
    assert answered[True] >= len(subnets) * 3 // 4 and answered[False] >= len(subnets) * 3 // 4
    # NXDOMAIN with DO in a signed zone is signed per name: always Python
    nx = _query("random123.example.test", "A").to_wire()
    assert _fastudp.answer_common(nx, engine.fast_state()) is None
    plain = _query("random123.example.test", "A", do=False).to_wire()
    assert _fastudp.answer_common(plain, engine.fast_state()) is not None


def test_new_generation_resigns_and_drops_cached_answers(tmp_path):
    engine = load_engine(signed_topology(tmp_path))
    t0 = engine.dnssec.start
    data = _query("www.example.test", "A", subnet="81.2.69.0/24").to_wire()
    first = engine.respond(data, "127.0.0.1")
    assert engine.wire_udp and engine.packed
    assert not engine.refresh_signatures()  # not due yet
    later = t0 + 604800 - 259200  # lifetime - refresh: due
    engine.clock = lambda: float(later)
    assert engine.refresh_signatures()
    assert not engine.wire_udp and not engine.packed and not engine.templates
    second = engine.respond(data, "127.0.0.1")
    sigs = [dns.message.from_wire(w).answer[1][0] for w in (first, second)]
    assert sigs[0].inception == t0 - 3600 and sigs[1].inception == later - 3600
    assert sigs[1].expiration == later + 604800


def test_ed25519_key_signs(tmp_path):
    engine = load_engine(signed_topology(tmp_path, algorithm=keys.ED25519))
    keyset = dns.message.from_wire(engine.respond(
        _query("example.test", "DNSKEY").to_wire(), "127.0.0.1", True)).answer[0]
    assert keyset[0].algorithm == 15
    msg = dns.message.from_wire(engine.respond(_query("mail.example.test", "A").to_wire(),
                                               "127.0.0.1"))
    assert _validate(msg, keyset) == 1


def test_keygen_files_and_modes(tmp_path):
    key = keys.generate("Example.Test", tmp_path / "k")
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o700"
    assert oct(key.path.stat().st_mode & 0o777) == "0o600"
    public = key.path.with_suffix(".key")
    assert oct(public.stat().st_mode & 0o777) == "0o644"
    assert public.read_text().startswith("example.test. 3600 IN DNSKEY 257 3 13 ")
    assert key.path.name == f"Kexample.test.+013+{key.tag:05d}.private"
    assert keys.load_keys("example.test", tmp_path / "k", "x")[0].dnskey == key.dnskey


def _broken(tmp_path: Path, how: str) -> Path:
    topology = signed_topology(tmp_path)
    private = next((tmp_path / "keys").glob("*.private"))
    if how == "missing-dir":
        shutil.rmtree(tmp_path / "keys")
    elif how == "no-key":
        private.unlink()
    elif how == "group-readable":
        private.chmod(0o640)
    elif how == "not-a-key":
        private.write_text("hello\n")
    elif how == "dangling-link":
        private.unlink()
        private.symlink_to(tmp_path / "elsewhere")
    elif how == "renamed":
        private.rename(private.with_name("Kexample.test.+013+00001.private"))
    return topology


BROKEN = {
    "missing-dir": "cannot read the key directory",
    "no-key": "no key for example.test. in",
    "group-readable": "is accessible by group or others (mode 0640; chmod 600 it)",
    "not-a-key": "is not a private key",
    "dangling-link": "cannot read the key file",
    "renamed": "which its name does not say",
}


@pytest.mark.parametrize("how", BROKEN)
def test_bad_key_refuses_to_load(tmp_path, how):
    topology = _broken(tmp_path, how)
    with pytest.raises(ConfigError) as err:
        load_engine(topology)
    assert str(err.value).startswith("zones[0].dnssec.key_dir: "), str(err.value)
    assert BROKEN[how] in str(err.value)


def _script() -> str:
    beside = Path(sys.executable).parent / "geoedge"
    return str(beside) if beside.exists() else (shutil.which("geoedge") or "geoedge")


@pytest.mark.parametrize("how", ["no-key", "group-readable"])
def test_server_refuses_to_start_unsigned(tmp_path, how):
    topology = _broken(tmp_path, how)
    proc = subprocess.run([_script(), "dns", "--config", str(topology), "--listen",
                           "127.0.0.1:0"], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("geoedge: config error: zones[0].dnssec.key_dir: "), \
        proc.stderr
    assert BROKEN[how] in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("dnssec", "key", "words"), [
    ('dnssec = { key_dir = "keys", refresh = 700000 }', "zones[0].dnssec.refresh",
     "must be less than signature_lifetime (604800)"),
    ('dnssec = { key_dir = "keys", refresh = 600 }', "zones[0].dnssec.refresh",
     "must be at least the zone's ttl (3600)"),
    ('dnssec = { key_dir = "" }', "zones[0].dnssec.key_dir", "empty path"),
    ("dnssec = { refresh = 7200 }", "zones[0].dnssec.key_dir", "required key is missing"),
    ('dnssec = { key_dir = "k", lifetime = 5 }', "zones[0].dnssec.lifetime", "unknown key"),
    ('dnssec = { key_dir = "k", inception_skew = 90000 }', "zones[0].dnssec.inception_skew",
     "must be between 0 and 86400"),
])
def test_bad_dnssec_settings_name_the_key(tmp_path, dnssec, key, words):
    topology = signed_topology(tmp_path, dnssec=dnssec)
    with pytest.raises(ConfigError) as err:
        load_topology(topology)
    assert str(err.value).startswith(key + ": ") and words in str(err.value), str(err.value)


def test_cli_keygen_and_ds(tmp_path, capsys):
    from geoedge.cli import main

    assert main(["dnssec", "keygen", "--zone", "example.test", "--key-dir",
                 str(tmp_path / "keys"), "--algorithm", "ed25519"]) == 0
    made = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"example\.test\. IN DS \d+ 15 2 [0-9a-f]{64}", made[0]), made
    assert made[1].startswith("example.test. 3600 IN DNSKEY 257 3 15 ")
    topology = signed_topology(tmp_path)  # key_dir "keys" beside it: the key just made
    assert main(["dnssec", "ds", "--zone", "example.test", "--config", str(topology)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1:] == made
    assert main(["dnssec", "ds", "--zone", "example.test", "--key-dir", str(tmp_path / "keys"),
                 "--trust-anchor"]) == 0
    anchor = capsys.readouterr().out
    assert anchor.startswith('trust-anchors {\n    "example.test." static-key 257 3 15 "')
    assert main(["dnssec", "ds", "--zone", "other.test", "--config", str(topology)]) == 2
    assert "config error: zones: no zone other.test. in" in capsys.readouterr().err


def test_do_and_plain_queries_alternate_from_the_caches(server):
    """The response caches (the C loop's included) are keyed by the query bytes after the ID,
    the OPT with its DO bit among them: DO and plain answers never mix."""
    srv, keyset = server
    for _ in range(3):
        for do in (True, False):
            for name, subnet in (("www.example.test", "8.8.8.0/24"), ("mail.example.test", None),
                                 ("nope.example.test", None)):
                msg = dns.query.udp(_query(name, "A", do=do, subnet=subnet), "127.0.0.1",
                                    port=srv.port, timeout=3)
                sigs = [r for r in msg.answer + msg.authority
                        if r.rdtype == dns.rdatatype.RRSIG]
                assert bool(sigs) is do, msg
                assert msg.rcode() == (0 if do or name != "nope.example.test" else 3)
                if do:
                    _validate(msg, keyset)
