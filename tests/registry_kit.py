"""Registry test kit: versions in the layout registered before ``model.json``.

Until the artifact format of :mod:`monitor.govern.artifact`, a version was ``manifest.json``,
``model.pkl`` (the model pickled with protocol 5) and ``signature``, its manifest's ``artifact``
naming the digest, size, class and pickle protocol only. :func:`write_pickled_version` writes that
layout byte for byte as the registry did, so the tests check that such versions keep loading.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from pathlib import Path

import msgspec

from monitor.detect.model import AdaptiveGaussian
from monitor.govern.registry import ModelRegistry, ModelVersion, VersionRef, sign_manifest


def pickled_manifest(version: ModelVersion, artifact: bytes) -> bytes:
    """``manifest.json`` as the registry wrote it for ``model.pkl``."""
    manifest = {
        "schema_version": 1,
        "model": msgspec.to_builtins(version),
        "artifact": {
            "sha256": hashlib.sha256(artifact).hexdigest(),
            "bytes": len(artifact),
            "python_class": "monitor.detect.model.AdaptiveGaussian",
            "pickle_protocol": 5,
        },
        "registered_at": int(time.time() * 1000),
    }
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def write_pickled_version(reg: ModelRegistry, version: ModelVersion, model: AdaptiveGaussian) -> Path:
    """Store ``model`` as ``version`` in the old layout (``model.pkl``), signed with the registry's key."""
    artifact = pickle.dumps(model, protocol=5)
    raw = pickled_manifest(version, artifact)
    d = reg.path(*VersionRef(version.device_id, version.sensor, version.version))
    d.mkdir(parents=True)
    (d / "manifest.json").write_bytes(raw)
    (d / "model.pkl").write_bytes(artifact)
    (d / "signature").write_bytes(sign_manifest(reg.key, raw))
    return d
