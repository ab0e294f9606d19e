"""The two apps every scenario serves: the small Starlette app and the example webapp.

Each run gets a fresh copy in its own directory (the tools watch and import that copy), and an
edit that changes what ``GET /`` says, so "the new code answers" is exact: ``version`` in the JSON.
The webapp talks to a real PostgreSQL through asyncpg (the benchmark starts its own, as the test
suite does), its schema migrated once before any tool starts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import REPO, bench_env

SMALL_APP = Path(__file__).resolve().parent / "smallapp.py"
SECRET = "bench-secret-0123456789-0123456789-0123456789"


@dataclass
class BenchApp:
    """``name`` in the report; ``target`` the ASGI import string; ``edit`` the file a reload edits."""

    name: str
    target: str
    edit: str
    env: dict[str, str] = field(default_factory=dict)

    def prepare(self, workdir: Path) -> None:
        """Copy the app into ``workdir`` (the directory every tool runs in and watches)."""
        workdir.mkdir(parents=True, exist_ok=True)
        if self.name == "starlette":
            shutil.copy(SMALL_APP, workdir / "smallapp.py")
        else:
            shutil.copytree(REPO / "webapp", workdir / "webapp",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)

    def set_version(self, workdir: Path, version: int) -> None:
        """Change the code: ``GET /`` answers ``version`` from now on (once a tool has reloaded)."""
        path = workdir / self.edit
        text = path.read_text()
        if self.name == "starlette":
            text = re.sub(r"^VERSION = .*$", f"VERSION = {version}", text, count=1, flags=re.M)
        else:
            text = re.sub(r'^__version__ = .*$', f'__version__ = "{version}"', text, count=1, flags=re.M)
        path.write_text(text)

    @staticmethod
    def version_of(answer: dict[str, object]) -> str:
        return str(answer.get("version"))


STARLETTE = BenchApp("starlette", "smallapp:app", "smallapp.py")


@contextmanager
def webapp() -> Iterator[BenchApp]:
    """The example webapp against a PostgreSQL started for the benchmark (stopped at the end)."""
    sys.path.insert(0, str(REPO))
    from tests.pgserver import PgServer, pg_bin  # the test suite's server helper, reused

    bin_dir = pg_bin()
    if bin_dir is None:
        raise RuntimeError("the webapp benchmarks need PostgreSQL's server binaries (apt-get install postgresql)")
    server = PgServer(Path(tempfile.mkdtemp(prefix="pgbench-")), bin_dir)
    try:
        server.init()
        server.start()
        server.create_app_user()
        database = server.create_database("bench")
        url = server.url(database=database)
        migrated = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO,
                                  env=bench_env({"DATABASE_URL": url}), capture_output=True, text=True, timeout=120)
        if migrated.returncode != 0:
            raise RuntimeError(f"alembic upgrade failed:\n{migrated.stdout}{migrated.stderr}")
        yield BenchApp("webapp", "webapp.app:app", "webapp/__init__.py",
                       env={"DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET})
    finally:
        server.destroy()


# ----- the large generated app (reload_bench.py --only large) --------------------------------------

LARGE_DOMAINS = 72  # each: a SQLAlchemy model, a schema module, a service and a router: 4 * 72 + 12 modules


def _model(i: int) -> str:
    parent = f'\n    parent_id: Mapped[int | None] = mapped_column(ForeignKey("t{i - 1}.id"))' if i else ""
    columns = "\n".join(f"    c{j}: Mapped[str] = mapped_column(String(80), default='')" for j in range(10))
    return f'''from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bigapp.db.base import Base

VERSION = 1


class Thing{i}(Base):
    __tablename__ = "t{i}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True){parent}
{columns}
'''


def _schema(i: int) -> str:
    """Request and response models, as an API's grow: many fields, validators, nesting."""
    fields = "\n".join(f"    f{j}: str = Field(default='', max_length=80, description='field {j}')" for j in range(20))
    extra = "\n\n".join(f"""class Thing{i}Part{k}(Thing{i}Base):
    part{k}: int = Field(default={k}, ge=0)
    notes{k}: list[str] = []
    tags{k}: dict[str, int] = {{}}

    @model_validator(mode="after")
    def check{k}(self) -> "Thing{i}Part{k}":
        return self""" for k in range(8))
    return f'''from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Thing{i}Base(BaseModel):
{fields}

    @field_validator("f0", "f1", "f2")
    @classmethod
    def strip(cls, value: str) -> str:
        return value.strip()


{extra}


class Thing{i}Create(Thing{i}Base):
    parts: list[Thing{i}Part0] = []


class Thing{i}Update(BaseModel):
    f0: str | None = None
    f1: str | None = None


class Thing{i}Out(Thing{i}Base):
    model_config = ConfigDict(from_attributes=True)
    id: int
    created: datetime | None = None
    children: list[Thing{i}Base] = []
    parts: list[Thing{i}Part1 | Thing{i}Part2] = []


class Thing{i}Page(BaseModel):
    items: list[Thing{i}Out]
    total: int
'''


def _service(i: int) -> str:
    return f'''from bigapp.core.util import slug, stamp
from bigapp.models.m{i} import Thing{i}
from bigapp.schemas.s{i} import Thing{i}Create, Thing{i}Out, Thing{i}Page


def listing(offset: int = 0) -> Thing{i}Page:
    return Thing{i}Page(items=[], total=offset)


def create(data: Thing{i}Create) -> Thing{i}Out:
    row = Thing{i}(**{{f"c{{j}}": slug(getattr(data, f"f{{j}}")) for j in range(10)}})
    return Thing{i}Out(id=1, created=stamp(), **data.model_dump()) if row is not None else None
'''


def _router(i: int) -> str:
    return f'''from fastapi import APIRouter, Depends, HTTPException

from bigapp.core.deps import pagination
from bigapp.schemas.s{i} import Thing{i}Create, Thing{i}Out, Thing{i}Page, Thing{i}Update
from bigapp.services import svc{i}

VERSION = 1
router = APIRouter(prefix="/things{i}", tags=["things{i}"])


@router.get("/", response_model=Thing{i}Page)
def list_things(offset: int = Depends(pagination)) -> Thing{i}Page:
    return svc{i}.listing(offset)


@router.post("/", response_model=Thing{i}Out)
def create_thing(data: Thing{i}Create) -> Thing{i}Out:
    return svc{i}.create(data)


def update_thing(thing_id: int, data: Thing{i}Update) -> Thing{i}Out:  # not routed yet
    raise HTTPException(404)
'''


LARGE_MAIN = '''import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bigapp.core.config import settings
from bigapp.core.util import UTIL_VERSION
from bigapp.models.m{model} import VERSION as MODEL_VERSION
from bigapp.routers import {routers}
from bigapp.routers.r{leaf} import VERSION as ROUTER_VERSION


@asynccontextmanager
async def lifespan(app: FastAPI):
    await asyncio.sleep(0.3)  # the app's own start-up work: a pool, a cache warmed
    yield


app = FastAPI(title=settings.name, lifespan=lifespan)
for module in ({routers},):
    app.include_router(module.router)


@app.get("/")
def home() -> dict[str, str]:
    return {{"version": f"{{ROUTER_VERSION}}.{{MODEL_VERSION}}.{{UTIL_VERSION}}"}}
'''
LARGE_FILES = {
    "bigapp/__init__.py": "",
    "bigapp/core/__init__.py": "",
    "bigapp/core/config.py": "from pydantic import BaseModel\n\n\nclass Settings(BaseModel):\n"
                             "    name: str = 'bigapp'\n    page_size: int = 50\n\n\nsettings = Settings()\n",
    "bigapp/core/util.py": "import datetime\nimport re\n\nUTIL_VERSION = 1\n\n\ndef slug(text: str) -> str:\n"
                           "    return re.sub(r'[^a-z0-9]+', '-', text.lower())\n\n\n"
                           "def stamp() -> datetime.datetime:\n    return datetime.datetime.now()\n",
    "bigapp/core/deps.py": "from bigapp.core.config import settings\n\n\ndef pagination(offset: int = 0) -> int:\n"
                           "    return min(offset, settings.page_size)\n",
    "bigapp/db/__init__.py": "",
    "bigapp/db/base.py": "from sqlalchemy.orm import DeclarativeBase\n\n\nclass Base(DeclarativeBase):\n    pass\n",
    "bigapp/models/__init__.py": "",
    "bigapp/schemas/__init__.py": "",
    "bigapp/services/__init__.py": "",
    "bigapp/routers/__init__.py": "",
}


class LargeApp:
    """A generated FastAPI app of about 300 modules (routers, pydantic schemas, SQLAlchemy models,
    services) with a 0.3 s lifespan; ``GET /`` answers ``{"version": "R.M.U"}``: the leaf router's,
    a model module's and the shared utility module's ``VERSION``, each changed by its own edit."""

    app = "bigapp.main:app"
    LEAF, MODEL = 7, 3
    EDITS = {"leaf router": "bigapp/routers/r7.py", "model": "bigapp/models/m3.py",
             "shared utility": "bigapp/core/util.py"}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = {"leaf router": 1, "model": 1, "shared utility": 1}
        files = dict(LARGE_FILES)
        for i in range(LARGE_DOMAINS):
            files[f"bigapp/models/m{i}.py"] = _model(i)
            files[f"bigapp/schemas/s{i}.py"] = _schema(i)
            files[f"bigapp/services/svc{i}.py"] = _service(i)
            files[f"bigapp/routers/r{i}.py"] = _router(i)
        routers = ", ".join(f"r{i}" for i in range(LARGE_DOMAINS))
        files["bigapp/main.py"] = LARGE_MAIN.format(model=self.MODEL, leaf=self.LEAF, routers=routers)
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (root / "supervisor.toml").write_text(f'[app]\napp = "{self.app}"\n[database]\nwait = false\n'
                                              "[status]\nport = 0\n")
        # Bytecode cached, as on a developer's machine (the runs write none: PYTHONDONTWRITEBYTECODE).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "bigapp")], check=True)

    def edit(self, which: str) -> str:
        """Make ``which`` edit (a key of EDITS); return the version ``GET /`` answers afterwards."""
        self.versions[which] += 1
        path = self.root / self.EDITS[which]
        name = {"leaf router": "VERSION", "model": "VERSION", "shared utility": "UTIL_VERSION"}[which]
        path.write_text(re.sub(rf"^{name} = \d+$", f"{name} = {self.versions[which]}", path.read_text(), flags=re.M))
        return self.version()

    def version(self) -> str:
        return ".".join(str(self.versions[key]) for key in ("leaf router", "model", "shared utility"))
