"""The analysis stage: what a deployment did, read back from its topics and registry."""
