"""Ingest: the Kafka client settings, integrity checks and features of readings, and a pair's past
readings read back from the readings topic for a retrain (``history``); its state is a slab of
the store."""
