"""Starting a child, in the supervisor: the process handle (output relay, readiness, bounded stop) and the
tracking of everything a child starts."""
