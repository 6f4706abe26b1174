"""Governance: rules over signals, alerts and storm control, retraining, the governor that applies
actions, and the model registry; its state is a slab of the store."""
