"""``telemon registry export|import``: move a registered version to another deployment.

``export`` writes one version as a bundle (:mod:`monitor.govern.bundle`), signed with the
deployment's Ed25519 bundle key (``--key FILE`` or ``registry.bundle_key_file``). ``import`` reads
a bundle signed by a trusted key (``registry.trusted_keys``, or ``--trust-key FILE``), registers
the version in this registry signed with this registry's key and records a ``registered`` event
by ``cli:<user>`` whose reason names the bundle and its origin. It does not make the version serve:
``telemon registry promote`` does, as for any version. Importing a bundle again changes nothing;
a version of that number already registered with other content is refused. A bundle that does not
verify (tampered, truncated, another format, an untrusted key) is refused with one line and exit
code 1, and nothing is registered; an unusable key file is a configuration error (exit code 2).
"""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.cli.args import actor, emit
from monitor.errors import RegistryError, SigningKeyError
from monitor.govern.registry import ModelRegistry, VersionRef

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EXAMPLES = """\
  telemon registry export dev-0007 temperature 3 --output dev-0007-temperature-v3.bundle
  telemon registry import dev-0007-temperature-v3.bundle --trust-key plant-a.pub"""


def add_parsers(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    pair: Callable[[argparse.ArgumentParser], None],
    version: Callable[[str], int],
) -> None:
    """Register ``export`` and ``import`` (``common``: --json; ``pair`` adds DEVICE
    SENSOR, ``version`` parses a version)."""
    export = actions.add_parser(
        "export",
        parents=[common],
        help="write a version as one signed bundle file, for another deployment",
        description="Write a registered version (manifest, model.json, its audit events) as one tar "
        "file signed with this deployment's Ed25519 bundle key. A version stored as model.pkl is "
        "exported as model.json: a bundle never holds a pickle.",
    )
    pair(export)
    export.add_argument("version", type=version, help="the version to export")
    export.add_argument("--output", "-o", type=Path, required=True, metavar="FILE", help="bundle to write")
    export.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="Ed25519 private key, PEM (default: registry.bundle_key_file)",
    )
    export.add_argument("--actor", default=None, help="who exports (default: cli:<user name>)")

    imp = actions.add_parser(
        "import",
        parents=[common],
        help="verify a bundle signed by a trusted key and register its version here",
        description="Verify a bundle (its Ed25519 signature by a trusted key, every member's digest, "
        "the formats) and register its version in this registry, signed with this registry's key; "
        "recorded as `registered` by cli:<user>. The version does not serve until promoted.",
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the bundle")
    imp.add_argument(
        "--trust-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an Ed25519 public key (PEM) to trust besides registry.trusted_keys (repeatable)",
    )
    imp.add_argument("--actor", default=None, help="who imports (default: cli:<user name>)")


def cmd_export(reg: ModelRegistry, args: argparse.Namespace) -> int:
    from monitor.govern import bundle

    path = args.key or args.settings.registry.bundle_key_file
    if path is None:
        raise SigningKeyError(
            "no bundle key: pass --key FILE or set registry.bundle_key_file (an Ed25519 private key: "
            "`openssl genpkey -algorithm ed25519 -out bundle.key`)"
        )
    key = bundle.load_private_key(path)
    ref = VersionRef(args.device, args.sensor, args.version)
    data = bundle.export(reg, ref, key, actor=actor(args))
    _write_new(args.output, data)
    key_id = bundle.key_id(key.public_key())
    doc = {**ref._asdict(), "file": str(args.output), "bytes": len(data), "key_id": key_id}
    emit(args, doc, f"{ref} exported to {args.output} ({len(data):,} bytes, signed by bundle key {key_id})")
    return 0


def cmd_import(reg: ModelRegistry, args: argparse.Namespace) -> int:
    from monitor.govern import bundle

    trusted = _trusted([*args.settings.registry.trusted_keys, *args.trust_key])
    verified = bundle.read(bundle.read_file(args.file), trusted, what=str(args.file))
    reason = bundle.import_reason(args.file.name, verified.index.origin)
    ref, new = reg.adopt(verified.manifest, verified.model, actor=actor(args), reason=reason)
    serving = reg.serving(ref.device_id, ref.sensor)
    doc = {**ref._asdict(), "imported": new, "serving": serving, "origin": verified.index.origin}
    if new:
        text = (
            f"{ref} imported from {args.file} ({bundle.describe(verified.index.origin)}); v{serving} serves "
            f"until `telemon registry promote {ref.device_id} {ref.sensor} {ref.version}`"
        )
    else:
        text = f"{ref} is already registered with this content: nothing changed"
    emit(args, _builtins(doc), text)
    return 0


def _trusted(paths: list[Path]) -> list[Ed25519PublicKey]:
    from monitor.govern import bundle

    if not paths:
        raise SigningKeyError(
            "no trusted bundle key: pass --trust-key FILE (the exporter's public key) or set "
            "registry.trusted_keys"
        )
    return [bundle.load_public_key(p) for p in paths]


def _write_new(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed into place); never over a file
    that exists."""
    if path.exists():
        raise RegistryError(f"{path} exists: remove it or choose another --output")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if another process wrote it meanwhile
    except FileExistsError:
        raise RegistryError(f"{path} exists: remove it or choose another --output") from None
    except OSError as exc:
        raise RegistryError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _builtins(doc: dict[str, object]) -> object:
    import msgspec

    return msgspec.to_builtins(doc)
