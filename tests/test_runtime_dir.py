"""The runtime directory: created 0700, refused when others can write it, never a surprise symlink;
its files private; an unusable SQLite path fails at once."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from supervisor.config.runtimedir import ensure_runtime_dir, runtime_dir_problem
from supervisor.errors import ConfigError
from tests.dbsupport import webapp_project
from tests.support import REPO, base_env, make_project, run_cli, supervisor

UP = ["up", "--no-reload"]
NOBODY = 65534


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ----- the pure check --------------------------------------------------------------------------

def test_a_private_directory_or_a_missing_one_is_fine(tmp_path: Path) -> None:
    assert runtime_dir_problem(tmp_path / "missing" / "deeper") is None
    (tmp_path / "mine").mkdir(mode=0o700)
    assert runtime_dir_problem(tmp_path / "mine") is None
    (tmp_path / "readable").mkdir(mode=0o755)
    assert runtime_dir_problem(tmp_path / "readable") is None


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    rd = tmp_path / "rd"
    rd.mkdir()
    rd.chmod(mode)
    problem = runtime_dir_problem(rd)
    assert problem is not None and f"is writable by other users (mode {mode:04o})" in problem


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rd").mkdir(mode=0o700)
    owner = os.stat(tmp_path / "rd").st_uid
    problem = runtime_dir_problem(tmp_path / "rd", uid=owner + 1)
    assert problem is not None and f"is owned by uid {owner}, not by you (uid {owner + 1})" in problem
    assert runtime_dir_problem(tmp_path / "rd", uid=owner + 1, any_owner=True) is None


def test_a_symlink_is_refused_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    problem = runtime_dir_problem(tmp_path / "link")
    assert problem is not None and "is a symbolic link" in problem and "allow_runtime_dir_symlink" in problem
    assert runtime_dir_problem(tmp_path / "link", allow_symlink=True) is None
    (tmp_path / "real").chmod(0o777)  # allowed links still lead to a private directory
    assert "writable by other users" in (runtime_dir_problem(tmp_path / "link", allow_symlink=True) or "")


def test_a_file_or_a_path_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in (runtime_dir_problem(tmp_path / "file") or "")
    assert "is a file, not a directory" in (runtime_dir_problem(tmp_path / "file" / "sub" / "rd") or "")


def test_ensure_creates_0700_and_refuses_what_check_refuses(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        ensure_runtime_dir(tmp_path / "a" / "rd", "here")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "a" / "rd") == 0o700
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(ConfigError) as info:
        ensure_runtime_dir(tmp_path / "open", "supervisor.toml [supervisor] runtime_dir")
    assert str(info.value).startswith("supervisor.toml [supervisor] runtime_dir: ")


# ----- check and up ----------------------------------------------------------------------------

def project(root: Path, extra: str = "") -> Path:
    return make_project(root, toml=f"""
        [supervisor]
        {extra}
        [app]
        app = "rawapp:app"
        app_dir = "{REPO / 'tests' / 'apps'}"
        [database]
        wait = false
        [status]
        enabled = false
    """)


def both(root: Path) -> list[tuple[int, str]]:
    """``check`` and ``up``'s exit code and output."""
    results = []
    for command in (["check"], UP):
        result = run_cli([*command, "--project-dir", str(root)], REPO, base_env(), timeout=60)
        results.append((result.returncode, result.stdout + result.stderr))
    return results


@pytest.mark.timeout(60)
def test_a_world_writable_runtime_dir_is_refused_by_check_and_up(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / ".supervisor").mkdir()
    (root / ".supervisor").chmod(0o777)
    for code, out in both(root):
        assert code == 2, out
        assert f"[supervisor] runtime_dir: {root / '.supervisor'} is writable by other users (mode 0777)" in out
        assert "Traceback" not in out
    assert mode_of(root / ".supervisor") == 0o777  # not "fixed" behind the user's back


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory to another user")
def test_a_runtime_dir_owned_by_another_user_is_refused_by_up(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / ".supervisor").mkdir(mode=0o700)
    os.chown(root / ".supervisor", NOBODY, NOBODY)
    for code, out in both(root):
        assert code == 2, out
        assert f"is owned by uid {NOBODY}, not by you (uid 0)" in out and "Traceback" not in out


@pytest.mark.timeout(60)
def test_a_symlinked_runtime_dir_is_refused_unless_configured(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    root = project(tmp_path / "p")
    (root / ".supervisor").symlink_to(shared)
    for code, out in both(root):
        assert code == 2, out
        assert "is a symbolic link" in out and "allow_runtime_dir_symlink = true" in out
    root = project(tmp_path / "q", extra="allow_runtime_dir_symlink = true")
    (root / ".supervisor").symlink_to(shared)
    result = run_cli(["check", "--project-dir", str(root)], REPO, base_env())
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(60)
def test_a_runtime_dir_that_is_a_file_fails_check(tmp_path: Path) -> None:
    root = project(tmp_path, extra='runtime_dir = "run"')
    (root / "run").write_text("not a directory\n")
    for code, out in both(root):
        assert code == 2, out
        assert f"{root / 'run'} is not a directory" in out


@pytest.mark.timeout(60)
def test_a_missing_config_file_named_with_config_is_exit_2(tmp_path: Path) -> None:
    root = project(tmp_path)
    for command in (["check"], UP, ["status"], ["systemd-unit"]):
        result = run_cli([*command, "--project-dir", str(root), "--config", str(root / "nope.toml")], REPO,
                         base_env())
        out = result.stdout + result.stderr
        assert result.returncode == 2, (command, out)
        assert f"--config: '{root / 'nope.toml'}' does not exist" in out and "Traceback" not in out


@pytest.mark.timeout(90)
def test_without_the_status_api_the_runtime_dir_is_0700_and_the_sqlite_file_0600(tmp_path: Path) -> None:
    """The SQLite file holds every user's notes; it was created 0644 in a 0755 directory."""
    root = webapp_project(tmp_path)
    old = os.umask(0o022)
    try:
        with supervisor(UP, root, base_env()) as run:
            run.wait_url(timeout=60)
            rd = root / ".supervisor"
            assert mode_of(rd) == 0o700, run.output
            assert mode_of(rd / "webapp.sqlite3") == 0o600, run.output
            assert run.stop() == 0
    finally:
        os.umask(old)


@pytest.mark.timeout(60)
def test_an_unusable_sqlite_path_fails_at_once_not_at_the_deadline(tmp_path: Path) -> None:
    root = webapp_project(tmp_path, deadline=60.0)
    (tmp_path / "a-file").write_text("x")
    url = f"sqlite+aiosqlite:///{tmp_path / 'a-file' / 'db.sqlite3'}"
    started = time.monotonic()
    with supervisor(UP, root, base_env(DATABASE_URL=url)) as run:
        code = run.wait_exit(timeout=40)
    assert code == 3, run.output
    assert time.monotonic() - started < 30, run.output
    assert "cannot open the SQLite file" in run.output and "a parent directory is a file" in run.output
    assert "not retried" in run.output
