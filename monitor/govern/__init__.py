"""Governance: rules over signals, alerts and storm control, retraining, the governor that applies
actions, and the model registry with the lineage that rebuilds a version (``lineage``,
``reproduce``); its state is a slab of the store."""
