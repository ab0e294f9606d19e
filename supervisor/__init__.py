"""A process supervisor and dev launcher for Python web backends."""

__version__ = "0.1.0"
