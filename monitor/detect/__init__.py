"""Detection: the per-pair model, the novelty stage, drift windows with their KS/PSI/ADWIN checks,
cohorts, the partial aggregates of a fleet that spans replicas and their detectors (``span``,
``spandrift``), and the compiled kernels; its state is a slab of the store."""
