import sys
from pathlib import Path

# Tests import their helpers as `tests.support`; make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
