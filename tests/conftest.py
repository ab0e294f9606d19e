import sys
from pathlib import Path

# Tests import their helpers as `tests.support`; make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The PostgreSQL fixtures (`pg_server`, `pg`) for every test module.
pytest_plugins = ["tests.pgserver"]
