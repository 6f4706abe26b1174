"""telemon: streaming telemetry monitoring for ML in production."""

__version__ = "0.1.0"
