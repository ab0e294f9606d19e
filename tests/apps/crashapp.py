"""An app that fails at import: a crash loop. The marker ends the traceback, so it is in the
last lines the worker writes to stderr."""

raise RuntimeError("CRASH-MARKER-7f3a the database schema is missing")
