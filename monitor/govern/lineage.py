"""What a registered version records besides its data, so that it can be rebuilt: the code, the
effective settings (secrets redacted), the rules file and the versions of the libraries it ran on.

The settings and the rules are stored once in the registry (``blobs/<sha256>``) and named by
digest in each manifest (``settings_sha256``, ``rules_sha256``): every version a process registers
shares them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass, field

from monitor.settings import Settings

#: The libraries whose versions a manifest records (python's too): those a model's numbers go through.
DEPENDENCIES = ("numpy", "river", "scipy", "msgspec", "confluent-kafka")


def dependencies() -> dict[str, str]:
    """``{"python": "3.11.9", "numpy": "2.1.3", ...}`` (``"-"``: not installed)."""
    out = {"python": platform.python_version()}
    for name in DEPENDENCIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def settings_json(settings: Settings) -> bytes:
    """The effective settings as JSON, every secret (``SecretStr``: the signing key, SASL password,
    credentials in ``kafka.extra``) replaced by ``**********``."""
    return settings.model_dump_json().encode()


@dataclass(frozen=True)
class Provenance:
    """The code, settings, rules and libraries of one process: the part of a version's lineage all
    its versions share."""

    code_version: str
    settings: bytes  # settings_json()
    rules: bytes  # the rules file's content (empty: unreadable)
    dependencies: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings, code_version: str) -> Provenance:
        try:
            rules = settings.rules_file.read_bytes()
        except OSError:
            rules = b""
        return cls(code_version, settings_json(settings), rules, dependencies())

    @property
    def settings_sha256(self) -> str:
        return hashlib.sha256(self.settings).hexdigest()

    @property
    def rules_sha256(self) -> str:
        return hashlib.sha256(self.rules).hexdigest()

    @property
    def config_hash(self) -> str:
        """The short settings hash versions have always recorded (``config_hash``)."""
        return self.settings_sha256[:16]

    def blobs(self) -> list[bytes]:
        """The content the manifests name by digest: store it with ``ModelRegistry.put_blob``."""
        return [self.settings, self.rules]
