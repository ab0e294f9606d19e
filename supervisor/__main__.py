"""``python -m supervisor`` and the ``webapp-supervisor`` script.

For ``up``, the first worker-to-be is forked before the supervisor imports its own modules, so
that it imports uvicorn on another core while the supervisor reads its settings
(:mod:`supervisor.warm.zygote`); only the standard library is loaded by then.
"""

from __future__ import annotations

import sys


def run() -> int:
    from supervisor.warm.zygote import start_zygote, wanted

    zygote = start_zygote() if wanted(sys.argv[1:]) else None
    from supervisor.cli import main

    return main(zygote=zygote)


if __name__ == "__main__":
    sys.exit(run())
