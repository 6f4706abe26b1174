"""Detection: the per-pair model, the novelty stage, drift windows with their KS/PSI/ADWIN checks,
cohorts, and the compiled kernels; its state is a slab of the store."""
