"""What the CLI trusts: a planted or corrupt state file, a bad token file, an open runtime directory.

A real loopback HTTP server stands in for whatever a planted ``state.json`` points at and records
every request, so each test can assert what would have left the machine (or the user).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from supervisor.cli import main
from supervisor.config.toml import Config, parse_config
from supervisor.status.control import Untrusted, trusted_status_url
from supervisor.status.statefile import STATE_NAME, TOKEN_NAME, StateRecord
from tests.support import app_project, http_get, supervisor, wait_until

EXFIL = "EXFIL-d41d8cd98f00-private-key-line"
TOKEN = "tok-3b5d7f9a1c2e4b6d8f0a"
DOC = {"supervisor": {"pid": 1, "state": "running", "mode": "development", "uptime": 1, "ready": True,
                      "ready_reason": "ok"}, "url": "http://127.0.0.1:1", "database": {"state": "disabled"},
       "reload": {"count": 0}, "workers": [{"slot": 0, "pid": 2, "state": "running", "restarts": 0}]}


@dataclass
class Recorder:
    url: str
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def headers_text(self) -> str:
        return json.dumps(self.requests)


@contextlib.contextmanager
def recorder() -> Iterator[Recorder]:
    """A loopback HTTP server that answers like a status API and records every request."""
    box: list[Recorder] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            box[0].requests.append((self.command, self.path, dict(self.headers)))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(200, DOC)

        def do_POST(self) -> None:
            self._answer(202, {"accepted": self.path.strip("/")})

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Recorder(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def plant(root: Path, **fields: Any) -> Path:
    """A runtime directory (0700, ours) holding a state file with ``fields`` over sane defaults."""
    rd = root / ".supervisor"
    rd.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "started_at": time.time(), "status_url": "http://127.0.0.1:9",
              "url": "http://127.0.0.1:8000", "token_file": str(rd / TOKEN_NAME), "version": "0.1.0",
              "project_dir": str(root), **fields}
    (rd / STATE_NAME).write_text(json.dumps(record))
    return rd


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text(EXFIL + "\n")
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ----- a planted state file --------------------------------------------------------------------

@pytest.mark.timeout(20)
def test_the_token_file_a_state_file_names_is_never_read(tmp_path: Path, secret_file: Path, supervisor_pid: int,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A planted state.json named ~/.ssh/id_ed25519 as its token file: its contents were sent as the
    bearer token to the URL it also named."""
    with recorder() as rec:
        plant(tmp_path, pid=supervisor_pid, status_url=rec.url, token_file=str(secret_file))
        for command in (["status"], ["restart", "--no-wait"], ["stop", "--no-wait"]):
            code, out = run([*command, "--project-dir", str(tmp_path)], capsys)
            assert code == 0, out
        assert [(m, p) for m, p, _ in rec.requests] == [("GET", "/status"), ("GET", "/status"),
                                                        ("POST", "/restart"), ("POST", "/stop")]
        assert EXFIL not in rec.headers_text() and EXFIL not in out


@pytest.mark.timeout(20)
def test_the_token_goes_only_with_requests_that_need_it(tmp_path: Path, supervisor_pid: int,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with recorder() as rec:
        rd = plant(tmp_path, pid=supervisor_pid, status_url=rec.url)
        (rd / TOKEN_NAME).write_text(TOKEN + "\n")
        (rd / TOKEN_NAME).chmod(0o600)
        assert run(["restart", "--no-wait", "--project-dir", str(tmp_path)], capsys)[0] == 0
    sent = {(m, p): h.get("Authorization") for m, p, h in rec.requests}
    assert sent == {("GET", "/status"): None, ("POST", "/restart"): f"Bearer {TOKEN}"}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("url", ["http://192.0.2.10:8787", "http://attacker.example:8787", "ftp://127.0.0.1:21",
                                 "http://127.0.0.1:notaport"])
def test_a_status_url_that_is_neither_loopback_nor_configured_is_refused(
        tmp_path: Path, url: str, supervisor_pid: int, capsys: pytest.CaptureFixture[str]) -> None:
    plant(tmp_path, pid=supervisor_pid, status_url=url)
    started = time.monotonic()
    code, out = run(["stop", "--project-dir", str(tmp_path)], capsys)
    assert code == 2, out
    assert "names a status URL that is neither loopback nor [status] host" in out
    assert time.monotonic() - started < 3  # refused, not tried


def test_the_configured_status_host_is_accepted_and_the_url_rebuilt(tmp_path: Path) -> None:
    record = StateRecord(pid=1, started_at=0.0, status_url="http://192.0.2.10:8787/x?y#z", url="",
                         token_file="", version="", project_dir="")
    config = parse_config('[status]\nhost = "192.0.2.10"\n')
    assert trusted_status_url(record, config, tmp_path) == "http://192.0.2.10:8787"
    loopback = dataclasses.replace(record, status_url="http://[::1]:9/")
    assert trusted_status_url(loopback, Config(), tmp_path) == "http://[::1]:9"
    with pytest.raises(Untrusted):
        trusted_status_url(record, Config(), tmp_path)
    with pytest.raises(Untrusted):  # a wildcard listen address names no host to trust
        trusted_status_url(dataclasses.replace(record, status_url="http://0.0.0.0:8787"),
                           parse_config('[status]\nhost = "0.0.0.0"\n'), tmp_path)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pid, started_in", [(1, 3600.0), (1, -1.0)])
def test_a_faked_liveness_is_not_believed(tmp_path: Path, pid: int, started_in: float,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """pid 1 runs, and a start time in the future passed the recycled-pid check."""
    with recorder() as rec:
        plant(tmp_path, pid=pid, started_at=time.time() + started_in, status_url=rec.url)
        code, out = run(["status", "--project-dir", str(tmp_path)], capsys)
    assert code == 3 and "stale state file: pid 1 is no longer running" in out, out
    assert rec.requests == []


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_runtime_dir_others_can_write_is_not_trusted(tmp_path: Path, mode: int, supervisor_pid: int,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with recorder() as rec:
        rd = plant(tmp_path, pid=supervisor_pid, status_url=rec.url)
        rd.chmod(mode)
        code, out = run(["status", "--project-dir", str(tmp_path)], capsys)
    assert code == 2, out
    assert f"error: runtime directory {rd} is writable by other users (mode {mode:04o})" in out
    assert rec.requests == []


@pytest.mark.timeout(20)
def test_a_symlinked_runtime_dir_is_not_followed(tmp_path: Path, supervisor_pid: int,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with recorder() as rec:
        shared = plant(tmp_path / "shared", pid=supervisor_pid, status_url=rec.url)
        (tmp_path / "p").mkdir()
        (tmp_path / "p" / ".supervisor").symlink_to(shared)
        code, out = run(["status", "--project-dir", str(tmp_path / "p")], capsys)
    assert code == 2 and "is a symbolic link" in out, out
    assert rec.requests == []


# ----- the token file ----------------------------------------------------------------------------

def bad_token_files(tmp_path: Path, secret_file: Path) -> dict[str, tuple[Path, str]]:
    two = tmp_path / "two-lines"
    two.write_text(f"{TOKEN}\n{EXFIL}\n")
    link = tmp_path / "link"
    link.symlink_to(secret_file)
    spaced = tmp_path / "spaced"
    spaced.write_text(f"{EXFIL} {EXFIL}\n")
    return {"two-lines": (two, "has 2 lines; expected one line"), "symlink": (link, "is a symbolic link"),
            "not-a-token": (spaced, "does not hold a token")}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", ["two-lines", "symlink", "not-a-token"])
def test_a_bad_token_file_is_one_line_of_error_without_its_contents(
        tmp_path: Path, secret_file: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, why = bad_token_files(tmp_path, secret_file)[case]
    with recorder() as rec:
        code, out = run(["restart", "--url", rec.url, "--token-file", str(path), "--no-wait"], capsys)
    assert code == 2, out
    [line] = out.strip().splitlines()
    assert line.startswith(f"error: {path} ") and why in line, out
    assert EXFIL not in out and EXFIL not in rec.headers_text()
    assert [m for m, _, _ in rec.requests] == ["GET"]  # the read went; the POST never did


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_a_token_file_others_can_write_is_not_used(tmp_path: Path, mode: int, supervisor_pid: int,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with recorder() as rec:
        rd = plant(tmp_path, pid=supervisor_pid, status_url=rec.url)
        (rd / TOKEN_NAME).write_text(TOKEN + "\n")
        (rd / TOKEN_NAME).chmod(mode)
        code, out = run(["stop", "--no-wait", "--project-dir", str(tmp_path)], capsys)
    assert code == 2 and f"is writable by other users (mode {mode:04o})" in out, out
    assert TOKEN not in rec.headers_text()


# ----- a corrupt state file ----------------------------------------------------------------------

CORRUPT = [
    ({"pid": "123"}, 'has "pid" a string; expected a positive integer'),
    ({"pid": True}, 'has "pid" a boolean; expected a positive integer'),
    ({"pid": -5}, 'has "pid" an integer; expected a positive integer'),
    ({"started_at": "yesterday"}, 'has "started_at" a string; expected a number'),
    ({"status_url": 8787}, 'has "status_url" an integer; expected a string'),
    ({"token_file": ["a", "b"]}, 'has "token_file" a list; expected a string'),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("fields, why", CORRUPT, ids=[w.split(";")[0] for _, w in CORRUPT])
def test_a_corrupt_state_file_is_one_line_naming_the_file_and_the_field(
        tmp_path: Path, fields: dict[str, Any], why: str, capsys: pytest.CaptureFixture[str]) -> None:
    rd = plant(tmp_path, **fields)
    for command in (["status"], ["restart"], ["stop"]):
        code, out = run([*command, "--project-dir", str(tmp_path)], capsys)
        assert code == 3, out
        assert out.strip() == f"no supervisor is running (its state file is unusable: {rd / STATE_NAME} {why})"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text, why", [("[1, 2]", "is a list, not a JSON object"), ("{}", 'has no "pid"'),
                                       ("\xff", "is not JSON")])
def test_a_state_file_that_is_not_a_record_is_named(tmp_path: Path, text: str, why: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rd = plant(tmp_path)
    (rd / STATE_NAME).write_text(text)
    code, out = run(["status", "--project-dir", str(tmp_path)], capsys)
    assert code == 3 and f"{rd / STATE_NAME} {why}" in out, out


@pytest.mark.timeout(60)
def test_up_replaces_a_corrupt_state_file_and_serves_its_api(tmp_path: Path) -> None:
    """It used to crash the status service silently: no /livez, /readyz, /metrics, no token file."""
    root = app_project(tmp_path, port=0, status_port=0)
    rd = plant(root, pid="not-a-pid", started_at=None)
    with supervisor(["up", "--no-reload"], root) as run_:
        found = run_.wait_for_output(r"status: API and dashboard on (http://\S+) \(token in ")
        url = found.group(1)
        assert http_get(url + "/livez")[0] == 200
        assert "replacing a corrupt state file" in run_.output
        assert wait_until(lambda: (rd / TOKEN_NAME).exists(), 10, "the token file", lambda: run_.output)
        state = json.loads((rd / STATE_NAME).read_text())
        assert state["pid"] == run_.pid
        assert run_.stop() == 0


@pytest.mark.timeout(60)
def test_up_does_not_claim_a_token_file_it_could_not_write(tmp_path: Path) -> None:
    """It logged "token in .../status.token" right after failing to write it."""
    root = app_project(tmp_path, port=0, status_port=0)
    rd = root / ".supervisor"
    rd.mkdir(mode=0o700)
    (rd / TOKEN_NAME).mkdir()  # os.replace cannot put a file there
    with supervisor(["up", "--no-reload"], root) as run_:
        found = run_.wait_for_output(r"status: API and dashboard on (http://\S+) \((.*)\)")
        assert found.group(2) == "the token file could not be written: set [status] token to use restart and stop"
        assert f"cannot write the state and token files in {rd}" in run_.output
        assert "token in" not in run_.output
        assert http_get(found.group(1) + "/livez")[0] == 200
        assert run_.stop() == 0


@pytest.mark.timeout(20)
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_wait_timeout_must_be_a_finite_positive_number(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["stop", "--timeout", value, "--url", "http://127.0.0.1:9"])
    assert info.value.code == 2
    assert "is not a finite, positive number of seconds" in capsys.readouterr().err
