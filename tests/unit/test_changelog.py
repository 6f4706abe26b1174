"""The changelog's records (:mod:`monitor.serve.changelog`): chunks, then the manifest, then the
previous generation's tombstones; the source offset on every record; manifests that do not decode
are refused. The round trips through Kafka are in tests/integration/test_changelog.py."""

from __future__ import annotations

import hashlib

import pytest

from monitor.errors import SnapshotError
from monitor.serve.changelog import CHUNK_BYTES, Manifest, manifest_of, records


def test_a_snapshot_is_chunks_then_its_manifest_then_the_previous_generations_tombstones() -> None:
    old = manifest_of("g", "t", 3, 10, 1, [b"a" * 10])
    data = [b"x" * CHUNK_BYTES, b"y" * 7]  # parts as the encoder hands them: 2 chunks
    new = manifest_of("g", "t", 3, 99, 2, data)
    assert (new.chunks, new.size, new.sha256) == (
        2,
        CHUNK_BYTES + 7,
        hashlib.sha256(b"".join(data)).hexdigest(),
    )
    out = records(new, data, old)
    keys = [k.decode() for k, _, _ in out]
    assert keys == [
        f"g/t/3/{new.generation}/0",
        f"g/t/3/{new.generation}/1",
        "g/t/3",
        f"g/t/3/{old.generation}/0",
    ]
    assert b"".join(v for _, v, _ in out[:2] if v is not None) == b"".join(data)
    assert Manifest.decode(out[2][1] or b"") == new
    assert out[3][1] is None  # a tombstone
    for _, _, headers in out:
        assert ("telemon.source.offset", b"99") in headers


def test_the_same_generation_again_writes_no_tombstones() -> None:
    m = manifest_of("g", "t", 0, 5, 1, [b"same"])
    assert [v is None for _, v, _ in records(m, [b"same"], m)] == [False, False]


@pytest.mark.parametrize("raw", [b"not json", b'{"format": 9}', b'{"format": 1, "group": "g"}'])
def test_a_manifest_that_does_not_decode_is_refused(raw: bytes) -> None:
    with pytest.raises(SnapshotError, match="unreadable changelog manifest"):
        Manifest.decode(raw)
