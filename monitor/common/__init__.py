"""Helpers every stage shares: bounded file reads, safe YAML with line numbers, packaged configs,
the optional extras, restricted unpickling."""
