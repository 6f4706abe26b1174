"""State beside the stages: slots and slabs of per-device arrays, signed partition snapshots, the
signing key."""
