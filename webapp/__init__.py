"""The Starlette web application the supervisor runs by default."""

__version__ = "0.1.0"
