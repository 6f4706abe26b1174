"""The HMAC-SHA256 key that signs model artifacts and state, and signing with it.

Where the key comes from (``registry`` settings section), first match wins:

1. ``registry.signing_key`` (a secret; set it with ``TELEMON_REGISTRY__SIGNING_KEY``): its UTF-8
   bytes;
2. ``registry.signing_key_file``: the file's bytes, without trailing whitespace (so
   ``openssl rand -hex 32 > key`` works);
3. the embedded default, for demos and development: ``<state_dir>/signing.key``, generated once
   (64 random hex characters, mode 0600) and reused by every later start, so that a plain restart
   restores the snapshots it signed; with a warning, since a key stored next to the files it
   protects only detects accidents and careless edits, not an attacker who can write there.
   ``registry.generate_key: false`` (production) turns this off: without a configured key the
   monitor then refuses to start.

A key shorter than :data:`MIN_KEY_BYTES` is refused, and so is an unreadable key file: both are
configuration errors (:class:`SigningKeyError`, a ``ValueError``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from monitor.common import files
from monitor.errors import SigningKeyError
from monitor.settings import RegistrySettings

log = logging.getLogger(__name__)

#: The shortest key accepted: HMAC-SHA256's block of security (32 bytes = 256 bits).
MIN_KEY_BYTES = 32


def load_key(cfg: RegistrySettings, generated: Path, *, create: bool = True) -> bytes:
    """The configured key, else the one in ``generated`` (made there first if ``create`` and
    ``cfg.generate_key``). Raises :class:`SigningKeyError` with what to configure."""
    if cfg.signing_key is not None:
        return check_key(cfg.signing_key.get_secret_value().encode(), "registry.signing_key")
    if cfg.signing_key_file is not None:
        return _read_key_file(cfg.signing_key_file)
    if generated.exists():
        return _read_key_file(generated)
    if not (create and cfg.generate_key):
        raise SigningKeyError(
            f"no signing key: set registry.signing_key (TELEMON_REGISTRY__SIGNING_KEY) or "
            f"registry.signing_key_file, at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"
            + ("" if cfg.generate_key else "; registry.generate_key is false")
            + f"; no generated key exists at {generated}"
        )
    return _generate(generated)


def check_key(key: bytes, source: str) -> bytes:
    """``key`` if it is long enough, else :class:`SigningKeyError` naming ``source``."""
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(
            f"{source}: the signing key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
            "(e.g. `openssl rand -hex 32`)"
        )
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        key = files.read_bytes(path, files.MAX_KEY_BYTES).rstrip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key file {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("signing key file %s is accessible to other users (mode %o)", path, mode & 0o777)
    return check_key(key, str(path))


def _generate(path: Path) -> bytes:
    """Write a fresh random key to ``path`` (0600) unless another process just did; either way,
    return the key now in ``path``. The key is written to a private temporary file and then
    hard-linked into place, so no reader ever sees a partial key and concurrent starts agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        log.warning(
            "no registry.signing_key configured: generated %s; configure a key kept outside the "
            "state directory for production (TELEMON_REGISTRY__SIGNING_KEY or registry.signing_key_file)",
            path,
        )
    except FileExistsError:
        pass  # another process generated it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key_file(path)


def sign(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data``, hex."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def verify(key: bytes, data: bytes, mac: str) -> bool:
    """Whether ``mac`` (hex) is the HMAC-SHA256 of ``data`` under ``key`` (constant-time compare)."""
    return hmac.compare_digest(sign(key, data).encode(), mac.strip().lower().encode("utf-8", "replace"))


def key_id(key: bytes) -> str:
    """A short public fingerprint of ``key``, recorded next to signatures so that a signature made
    with another key is reported as such rather than as tampering."""
    return sign(key, b"telemon key id")[:16]
