"""Ingest: the Kafka client settings, integrity checks and features of readings; its state is a
slab of the store."""
