"""The database, as the supervisor sees it: the probe, the watch, migrations."""
