"""Offline evaluation of the monitor: replaying streams and scoring detection quality."""
