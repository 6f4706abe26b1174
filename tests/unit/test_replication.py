"""The artifacts topic's records: a version's files in chunks, joined in any order, never mixed."""

from __future__ import annotations

import pytest

from monitor.govern.registry import VersionRef
from monitor.govern.replication import CHUNK_BYTES, Assembler, chunks

REF = VersionRef("dev-0007", "temperature", 2)


def test_chunks_join_in_any_order_and_two_bundles_of_a_version_do_not_mix() -> None:
    first = chunks(REF, {"model.pkl": b"a" * (2 * CHUNK_BYTES)})
    second = chunks(REF, {"model.pkl": b"b" * (2 * CHUNK_BYTES)})
    assert len(first) == len(second) == 3
    assert [k for k, _ in first] == [k for k, _ in second]  # compaction keeps one copy per key
    assembler = Assembler()
    done = [assembler.add(v) for (_, v) in [first[2], second[0], first[0], second[2], first[1], second[1]]]
    bundles = [b for b in done if b is not None]
    assert [b.files["model.pkl"][:1] for b in bundles] == [b"a", b"b"]
    assert all((b.device_id, b.sensor, b.version) == REF for b in bundles)
    assert assembler.parts == {}


def test_a_record_that_is_no_chunk_or_a_bundle_that_does_not_match_its_digest_is_refused() -> None:
    with pytest.raises(ValueError, match="not a chunk"):
        Assembler().add(b"\x00garbage")
    ((_, value),) = chunks(REF, {"model.pkl": b"x"})
    forged = value.replace(b"model.pkl", b"model.pkL")
    with pytest.raises(ValueError, match="does not match its digest"):
        Assembler().add(forged)
