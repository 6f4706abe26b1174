"""The service around the pipeline: the Kafka loop, partitions and their snapshots, sinks, dead
letters, metrics and the HTTP endpoint."""
