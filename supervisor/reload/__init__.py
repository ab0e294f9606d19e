"""Reloading: watching files, deciding what a change means, rolling restarts, the browser."""
