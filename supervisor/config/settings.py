"""Everything ``up`` and ``check`` need, resolved once into one frozen object.

Precedence, highest first (one visible order, like honcho's ChainMap):

1. command-line options (``--port``, ``--mode``)
2. the real process environment
3. ``.env``
4. ``supervisor.toml``
5. built-in defaults

Variables in the process environment win over ``.env`` so that a deployment can override a
developer's file without editing it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.config.discover import AppTarget, discover, from_argument
from supervisor.config.dotenv import DotEnv, load_dotenv_file
from supervisor.config.envrules import apply_environment_rules, schema_default
from supervisor.config.envschema import VarSpec, validate_environ
from supervisor.config.runtimedir import runtime_dir_problem
from supervisor.config.toml import (
    PYPROJECT,
    PYPROJECT_TABLE,
    AppSection,
    Config,
    ServerSection,
    config_file,
    field_bounds,
    load_config,
    log_config_problem,
    missing_config,
    pyproject_has_table,
)
from supervisor.errors import ConfigError, Notice, Problem
from supervisor.programs.procfile import read_procfile
from supervisor.secrets import Redactor, secret_values

# Variables the supervisor itself reads; checked even when supervisor.toml declares nothing.
BUILTIN_SPECS: dict[str, VarSpec] = {
    # 0: any free port, as with --port 0 and [server] port = 0.
    "PORT": VarSpec("PORT", type="port", required=False, min=0),
    "SUPERVISOR_MODE": VarSpec("SUPERVISOR_MODE", type="string", required=False),
    "SUPERVISOR_RELOAD_POLL": VarSpec("SUPERVISOR_RELOAD_POLL", type="boolean", required=False),
}
MODES = ("development", "production")


@dataclass(frozen=True)
class Overrides:
    """Options given on the command line; ``None`` means not given."""

    port: int | None = None
    mode: str | None = None
    workers: int | None = None
    reload: bool | None = None
    log_config: str | None = None  # relative to the current directory, as a shell user means it
    app: str | None = None  # APP: module:attribute, a file or a module (supervisor.config.discover)
    factory: bool | None = None  # --factory


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    config: Config
    mode: str
    host: str
    port: int
    workers: int
    reload: bool
    reload_poll: bool | None  # None: detect from the mounts (see supervisor.reload.mounts)
    runtime_dir: Path
    dotenv: DotEnv
    # The environment a worker starts with: process environment over .env, plus what the
    # supervisor tells the webapp (SUPERVISOR_MODE, SUPERVISOR_RUNTIME_DIR, ..._DATABASE_URL_ENV).
    environ: dict[str, str] = field(repr=False)
    # name -> ".env:LINE" or "environment", for every variable .env set or the schema declares.
    env_sources: dict[str, str] = field(default_factory=dict)
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)
    # The workers' logging config file, absolute (up --log-config, else [app] log_config); "": uvicorn's.
    log_config: str = ""
    # How the input was read, for the log at start and for `check`: the app found, files ignored.
    notices: tuple[Notice, ...] = ()
    # Neither APP, [app] app nor a Procfile names the app and none was found: `up` and `check` fail
    # with this (other commands do not need the app).
    app_problem: Problem | None = None

    def app_dir(self) -> Path:
        """``[app] app_dir``, absolute: where workers and the migration run, and a root of the project's modules."""
        return (self.project_dir / self.config.app.app_dir).resolve()

    @property
    def production(self) -> bool:
        return self.mode == "production"


def _merge_environ(process: Mapping[str, str], dotenv: DotEnv) -> tuple[dict[str, str], dict[str, str]]:
    merged = dict(dotenv.values)
    sources = {name: dotenv.where(name) for name in dotenv.values}
    for name, value in process.items():
        if name in merged:
            sources[name] = "environment"
        merged[name] = value
    return merged, sources


def resolve_settings(project_dir: Path, environ: Mapping[str, str], overrides: Overrides = Overrides(),
                     config_path: Path | None = None, executable: str | None = None) -> Settings:
    """Load ``supervisor.toml`` and ``.env`` from ``project_dir`` and validate everything.

    Raises :class:`ConfigError` carrying every problem found in the file, ``.env`` and the
    environment together, so one run of ``check`` shows all there is to fix. ``executable``: the
    interpreter the workers run (default :data:`sys.executable`), whose directory leads their ``PATH``.
    """
    project_dir = project_dir.resolve()
    problems: list[Problem] = []
    if config_path is not None and not config_path.exists():
        # Named on purpose: running on silent defaults instead would hide a typo.
        problems.append(missing_config(config_path))
    notices: list[Notice] = []
    if config_path is None and (project_dir / "supervisor.toml").exists() and pyproject_has_table(project_dir):
        notices.append(Notice(f"{project_dir / PYPROJECT} [{PYPROJECT_TABLE}] is ignored: "
                              f"{project_dir / 'supervisor.toml'} is read instead (it wins when both exist)",
                              warning=True))
    config_path = config_file(project_dir, config_path)
    if not project_dir.is_dir():
        problems.append(Problem("--project-dir", f"{str(project_dir)!r} is not a directory; expected "
                                                 "the directory holding supervisor.toml"))
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        # Keep going with defaults so .env and environment problems are reported in the same run.
        problems.extend(exc.problems)
        config = Config(path=str(config_path))
    config = with_procfile(config, project_dir, problems, notices)
    config, app_problem = choose_app(config, project_dir, overrides, problems, notices)

    env_file = Path(config.supervisor.env_file)
    dotenv = load_dotenv_file(env_file if env_file.is_absolute() else project_dir / env_file, environ)
    problems.extend(dotenv.problems)
    merged, sources = _merge_environ(environ, dotenv)

    specs = {**BUILTIN_SPECS, **config.env}
    values, env_problems = validate_environ(specs, merged, sources, schema_default(config))
    problems.extend(env_problems)

    mode = overrides.mode or merged.get("SUPERVISOR_MODE") or config.supervisor.mode
    if mode not in MODES:
        problems.append(Problem(f"{sources.get('SUPERVISOR_MODE', 'environment')} SUPERVISOR_MODE",
                                f"{mode!r} is not a mode; expected 'development' or 'production'"))
        mode = "development"

    env_poll = values.get("SUPERVISOR_RELOAD_POLL")
    reload_poll = bool(env_poll) if env_poll is not None else config.reload.poll
    if overrides.reload is not None:
        reload = overrides.reload
    elif config.reload.enabled is not None:
        reload = config.reload.enabled
    else:
        reload = mode == "development"

    # Command-line values get the same ranges as their supervisor.toml keys (argparse checks types only).
    for option, value, (lo, hi) in (("--port", overrides.port, field_bounds(ServerSection, "port")),
                                    ("--workers", overrides.workers, field_bounds(AppSection, "workers"))):
        if value is not None and not lo <= value <= hi:
            problems.append(Problem(option, f"{value} is out of range; expected {lo} to {hi}"))

    runtime_dir = Path(config.supervisor.runtime_dir)
    runtime_dir = runtime_dir if runtime_dir.is_absolute() else project_dir / runtime_dir
    unsafe = runtime_dir_problem(runtime_dir, config.supervisor.allow_runtime_dir_symlink)
    if unsafe:
        problems.append(Problem(runtime_dir_where(config), f"{runtime_dir} {unsafe}"))
    problems.extend(apply_environment_rules(config, mode, merged, sources, values, runtime_dir))
    app_dir = project_dir / config.app.app_dir
    if project_dir.is_dir() and not app_dir.is_dir():
        problems.append(Problem(config.where("app", "app_dir"), f"{config.app.app_dir!r} is not a "
                                f"directory ({app_dir}); expected a directory relative to {project_dir}"))
    log_config = _log_config(project_dir, config, overrides, problems)
    # The webapp reads these instead of assuming the defaults.
    merged["SUPERVISOR_MODE"] = mode
    merged["SUPERVISOR_RUNTIME_DIR"] = str(runtime_dir)
    merged["SUPERVISOR_DATABASE_URL_ENV"] = config.database.url_env
    merged["PATH"] = interpreter_path(merged.get("PATH"), executable or sys.executable)

    if problems:
        raise ConfigError(problems)

    declared = {name for name in config.env if name in merged}
    return Settings(
        project_dir=project_dir,
        config=config,
        mode=mode,
        host=config.server.host,
        port=overrides.port if overrides.port is not None else values.get("PORT", config.server.port),
        workers=overrides.workers or config.app.workers,
        reload=reload,
        reload_poll=reload_poll,
        runtime_dir=runtime_dir,
        dotenv=dotenv,
        environ=merged,
        env_sources={name: sources.get(name, "environment") for name in set(dotenv.values) | declared},
        secrets=frozenset(secret_values(merged, {n for n, s in config.env.items() if s.is_secret},
                                        named=set(config.env) | set(dotenv.values))),
        notices=tuple(notices),
        app_problem=app_problem,
        log_config=log_config,
    )


def _log_config(project_dir: Path, config: Config, overrides: Overrides, problems: list[Problem]) -> str:
    """The logging config file as an absolute path ("" for none), or a problem if it is not a file."""
    if overrides.log_config is not None:
        where, value, path = "--log-config", overrides.log_config, Path(overrides.log_config).resolve()
    else:
        where, value = config.where("app", "log_config"), config.app.log_config
        path = project_dir / value
    if not value:
        return ""
    form = log_config_problem(value)
    if form or not path.is_file():
        problems.append(Problem(where, form or f"{value!r} is not a file ({path}); expected a logging config "
                                              f"file (.json, .yaml or .ini, as uvicorn --log-config takes)"))
        return ""
    return str(path)


def interpreter_path(path: str | None, executable: str) -> str:
    """``PATH`` for the children, with the interpreter's directory first unless it is on it already.

    The workers and programs run this interpreter, so an app installed in a virtual environment
    finds the environment's console scripts (``alembic``, ``celery``) as it would if the
    environment were activated; an unset ``PATH`` keeps the system's default after it.

    >>> interpreter_path("/usr/bin:/bin", "/srv/app/.venv/bin/python")
    '/srv/app/.venv/bin:/usr/bin:/bin'
    """
    bin_dir = os.path.dirname(executable)
    base = path if path is not None else os.defpath
    if not bin_dir or bin_dir in base.split(os.pathsep):
        return base
    return os.pathsep.join([bin_dir, base]) if base else bin_dir


def problem_redactor(project_dir: Path, environ: Mapping[str, str],
                     config_path: Path | None = None) -> Redactor:
    """A redactor for printing problems when :func:`resolve_settings` failed.

    Built from what can still be read: the process environment, ``.env`` (if readable) and the
    ``[env]`` declarations (if ``supervisor.toml`` parses). Every name that looks secret counts
    here, inherited or not: an error listing may over-mask a word, but must not leak.
    """
    project_dir = project_dir.resolve()
    try:
        config = load_config(config_file(project_dir, config_path))
    except ConfigError:
        config = Config()
    env_file = Path(config.supervisor.env_file)
    dotenv = load_dotenv_file(env_file if env_file.is_absolute() else project_dir / env_file, environ)
    merged, _ = _merge_environ(environ, dotenv)
    return Redactor(secret_values(merged, {n for n, s in config.env.items() if s.is_secret}))


def runtime_dir_where(config: Config) -> str:
    return config.where("supervisor", "runtime_dir")


def needs_restart(old: Settings, new: Settings) -> list[str]:
    """What changed between ``old`` and ``new`` that a reload cannot apply: what the supervisor
    set up once at start (the held socket, the worker count, the status API, the file watcher)."""
    pairs = (
        ("[server]", (old.host, old.port, old.config.server), (new.host, new.port, new.config.server)),
        ("workers", old.workers, new.workers),
        ("[status]", old.config.status, new.config.status),
        ("[reload]", (old.reload, old.reload_poll, old.config.reload),
         (new.reload, new.reload_poll, new.config.reload)),
        ("[supervisor] runtime_dir", old.runtime_dir, new.runtime_dir),
        ("[programs]", old.config.programs, new.config.programs),
        ("[app] depends_on", old.config.app.depends_on, new.config.app.depends_on),
    )
    return [name for name, before, after in pairs if before != after]


def choose_app(config: Config, project_dir: Path, overrides: Overrides, problems: list[Problem],
               notices: list[Notice]) -> tuple[Config, Problem | None]:
    """The app to serve, in this order: APP on the command line, ``[app] app`` (or a Procfile's
    uvicorn ``web`` line), else the one found in the project, said in a notice with how to pin it.
    Returns the config with ``[app]`` set, and the problem to report if there is no app at all."""
    app = config.app
    if overrides.app is not None:
        target = from_argument(overrides.app, project_dir, app.app_dir)
        if isinstance(target, str):
            problems.append(Problem("APP", target))
            return config, None
    elif app.app:
        factory = app.factory or bool(overrides.factory)
        return dataclasses.replace(config, app=dataclasses.replace(app, factory=factory)), None
    else:
        found = discover(project_dir, app.app_dir)
        if found.target is None:
            return config, Problem("APP", "no app given and none found; tried " + "; ".join(found.tried) +
                                   ". Expected python -m supervisor up main:app (or main.py), or "
                                   f"[app] app = \"module:attribute\" in {config.path}")
        target = found.target
        notices.append(Notice(_found_line(target, config)))
    factory = target.factory or bool(overrides.factory)
    return dataclasses.replace(config, app=dataclasses.replace(
        app, app=target.app, factory=factory, app_dir=target.app_dir)), None


def _found_line(target: AppTarget, config: Config) -> str:
    """``app main:app found in main.py; pin it with [app] app = "main:app" in supervisor.toml, or
    python -m supervisor up main:app``: what was chosen, and how to choose it on purpose."""
    keys = [f'app = "{target.app}"']
    if target.app_dir != ".":
        keys.append(f'app_dir = "{target.app_dir}"')
    if target.factory:
        keys.append("factory = true")
    what = f"app {target.app}{' (a factory)' if target.factory else ''} found in {target.file}"
    if target.app_dir != ".":
        what += f", imported from {target.app_dir}"
    command = target.file if target.app_dir != "." else target.app
    return (f"{what}; pin it with [{config.locator.name('app')}] {', '.join(keys)} in {Path(config.path).name}, or run "
            f"python -m supervisor up {command}")


def with_procfile(config: Config, project_dir: Path, problems: list[Problem],
                  notices: list[Notice] | None = None) -> Config:
    """Without ``[programs]``, the project's ``Procfile`` names the programs (and a uvicorn ``web``
    line the app, unless ``[app] app`` is set). With them, a Procfile is ignored, and a notice says so."""
    if config.programs:
        if notices is not None and (project_dir / "Procfile").is_file():
            notices.append(Notice(f"{project_dir / 'Procfile'} is ignored because [programs] is defined in "
                                  f"{config.path}", warning=True))
        return config
    found = read_procfile(project_dir)
    if found is None:
        return config
    procfile, procfile_problems = found
    problems.extend(procfile_problems)
    app = config.app
    if procfile.app is not None and app.app == AppSection().app:
        app = dataclasses.replace(app, app=procfile.app)
    return dataclasses.replace(config, programs=procfile.programs, app=app, procfile=True)
