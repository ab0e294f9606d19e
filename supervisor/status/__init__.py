"""The status API, its document, metrics, dashboard, the state file and the CLI that reads it."""
