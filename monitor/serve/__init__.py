"""The service around the pipeline: the Kafka loop, partitions and their snapshots, sinks, dead
letters, the merged fleet view of ``fleet.span`` (``fleetspan``), metrics and the HTTP endpoint."""
