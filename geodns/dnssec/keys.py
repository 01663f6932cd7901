"""DNSSEC key files: made by ``geoedge dnssec keygen``, read at start-up by the signer.

Rules:

- A key is a combined signing key (CSK: DNSKEY flags 257, ZONE + SEP): it signs every RRset
  of its zone, the DNSKEY RRset included. Algorithms: 13 (ECDSA P-256 with SHA-256, the
  default) and 15 (Ed25519). Crypto is ``cryptography``'s; DNSKEY, key tag and DS come from
  ``dns.dnssec``.
- Files, in the zone's key directory, named as BIND names them:
  ``K<zone>+<alg>+<tag>.private`` holds the private key as unencrypted PKCS#8 PEM, created
  with mode 0600 (never world- or group-readable, never overwritten);
  ``K<zone>+<alg>+<tag>.key`` holds the public DNSKEY as a zone-file line (mode 0644).
- Every ``.private`` file of the zone in the directory is a signing key (so a rollover adds
  the new key beside the old one, and both sign: docs in the README's DNSSEC section).
- Loading refuses, with a :class:`ConfigError` naming the key ``zones[N].dnssec.key_dir``: a
  missing or unreadable directory or file, no key for the zone, a private key readable by
  group or others, a file that is not a P-256 or Ed25519 private key, or a file whose name
  does not match its key (algorithm or tag).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdtypes.ANY.DNSKEY
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from geoconfig.validate import ConfigError

ECDSAP256SHA256, ED25519 = 13, 15
ALGORITHMS = {"ecdsap256sha256": ECDSAP256SHA256, "ed25519": ED25519}
CSK_FLAGS = 257  # ZONE | SEP
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    zone: str  # absolute, lower case, trailing dot
    algorithm: int
    tag: int
    private: PrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY
    path: Path  # the .private file


def _absolute(zone: str) -> str:
    zone = zone.strip().lower()
    return zone if zone.endswith(".") else zone + "."


def file_stem(zone: str, algorithm: int, tag: int) -> str:
    return f"K{_absolute(zone)}+{algorithm:03d}+{tag:05d}"


def _algorithm_of(private: object) -> int | None:
    if isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1":
        return ECDSAP256SHA256
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return ED25519
    return None


def _dnskey(private: PrivateKey, algorithm: int) -> dns.rdtypes.ANY.DNSKEY.DNSKEY:
    return dns.dnssec.make_dnskey(private.public_key(), algorithm, flags=CSK_FLAGS)


def generate(zone: str, key_dir: Path, algorithm: int = ECDSAP256SHA256,
             ttl: int = 3600) -> SigningKey:
    """Make a new key for ``zone`` and write its two files into ``key_dir`` (created 0700 if
    missing). Raises OSError (e.g. the files exist) or ValueError (unknown algorithm)."""
    if algorithm == ECDSAP256SHA256:
        private: PrivateKey = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported algorithm {algorithm} (13 or 15)")
    dnskey = _dnskey(private, algorithm)
    tag = dns.dnssec.key_id(dnskey)
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem = key_dir / file_stem(zone, algorithm, tag)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_new(stem.with_name(stem.name + ".private"), pem, 0o600)
    line = f"{_absolute(zone)} {ttl} IN DNSKEY {dnskey.to_text()}\n"
    _write_new(stem.with_name(stem.name + ".key"), line.encode("ascii"), 0o644)
    return SigningKey(_absolute(zone), algorithm, tag, private, dnskey,
                      stem.with_name(stem.name + ".private"))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, data)
    finally:
        os.close(fd)


def load_keys(zone: str, key_dir: Path, path: str) -> list[SigningKey]:
    """Every signing key of ``zone`` in ``key_dir``; ``path`` is the config key for errors."""
    zone = _absolute(zone)
    try:
        names = sorted(p for p in os.listdir(key_dir)
                       if p.startswith(f"K{zone}+") and p.endswith(".private"))
    except OSError as exc:
        raise ConfigError(path, f"cannot read the key directory {key_dir}: "
                                f"{exc.strerror or exc}") from None
    if not names:
        raise ConfigError(path, f"no key for {zone} in {key_dir} (make one: geoedge dnssec "
                                f"keygen --zone {zone} --key-dir {key_dir})")
    return [load_key(zone, key_dir / name, path) for name in names]


def load_key(zone: str, file: Path, path: str) -> SigningKey:
    try:
        with open(file, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read the key file {file}: "
                                f"{exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(path, f"the key file {file} is accessible by group or others "
                                f"(mode {stat.S_IMODE(mode):04o}; chmod 600 it)")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(path, f"the key file {file} is not a private key: {exc}") from None
    algorithm = _algorithm_of(private)
    if algorithm is None:
        raise ConfigError(path, f"the key file {file} holds neither a P-256 nor an Ed25519 key")
    assert isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    dnskey = _dnskey(private, algorithm)
    tag = dns.dnssec.key_id(dnskey)
    if file.name != file_stem(zone, algorithm, tag) + ".private":
        raise ConfigError(path, f"the key file {file} holds key {algorithm}+{tag:05d}, which "
                                "its name does not say")
    return SigningKey(zone, algorithm, tag, private, dnskey, file)


def ds_text(key: SigningKey) -> str:
    """The DS record (SHA-256) for the parent zone, as a zone-file line."""
    ds = dns.dnssec.make_ds(dns.name.from_text(key.zone), key.dnskey, "SHA256")
    return f"{key.zone} IN DS {ds.to_text()}"


def dnskey_text(key: SigningKey, ttl: int = 3600) -> str:
    return f"{key.zone} {ttl} IN DNSKEY {key.dnskey.to_text()}"


def trust_anchor_text(keys: list[SigningKey]) -> str:
    """A ``trust-anchors`` clause for ``delv -a FILE`` (or named.conf) with the keys."""
    lines = []
    for key in keys:
        d = key.dnskey
        b64 = dns.rdtypes.ANY.DNSKEY.DNSKEY.to_text(d).split(" ", 3)[3].replace(" ", "")
        lines.append(f'    "{key.zone}" static-key {d.flags} {d.protocol} {d.algorithm} '
                     f'"{b64}";')
    return "trust-anchors {\n" + "\n".join(lines) + "\n};\n"
