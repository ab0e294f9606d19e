"""Worker slots: the lifecycle machine, the restart policy, processes and the worker entry point."""
