import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests import their helpers as `tests.support`; make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The PostgreSQL fixtures (`pg_server`, `pg`) for every test module.
pytest_plugins = ["tests.pgserver"]


@pytest.fixture
def supervisor_pid() -> Iterator[int]:
    """A live process whose command line reads like a supervisor's (``... supervisor up``):
    what a state file's pid must be to be trusted."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "supervisor", "up"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
