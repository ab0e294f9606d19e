"""``.env`` parsing: values as python-dotenv reads them, and problems with their line numbers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from supervisor.config.dotenv import MAX_TOTAL_LENGTH, MAX_VALUE_LENGTH, load_dotenv_file, parse_dotenv

TEXT = """\
# a comment
A=1
export B="two words"
C='single $A'
D=${A}-x
E="first
second"
G=3 # trailing comment
H=
A=again
"""


def test_values_follow_python_dotenv_rules() -> None:
    env = parse_dotenv(TEXT)
    assert env.values == {"A": "again", "B": "two words", "C": "single $A", "D": "1-x",
                          "E": "first\nsecond", "G": "3", "H": ""}
    assert env.problems == ()
    assert env.exists


def test_each_name_remembers_the_line_it_was_last_set_on() -> None:
    env = parse_dotenv(TEXT, "proj/.env")
    assert env.lines["B"] == 3
    assert env.lines["E"] == 6  # a multi-line value starts on its first line
    assert env.lines["G"] == 8  # line numbers after a multi-line value stay right
    assert env.lines["A"] == 10
    assert env.where("G") == "proj/.env:8"
    assert env.where("MISSING") == "proj/.env"


def test_malformed_lines_are_reported_with_their_line_number_in_order() -> None:
    env = parse_dotenv("OK=1\nthis is not an assignment\nNAME_ONLY\n=no-name\nLAST=2\n", "proj/.env")
    assert [p.where for p in env.problems] == ["proj/.env:2", "proj/.env:3", "proj/.env:4"]
    assert "cannot be parsed; expected NAME=value" in env.problems[0].message
    assert "has no '='; expected NAME=value" in env.problems[1].message
    assert env.values == {"OK": "1", "LAST": "2"}


def test_a_malformed_line_is_never_quoted() -> None:
    env = parse_dotenv("API_TOKEN tok-very-secret-123\n")
    [problem] = env.problems
    assert "tok-very-secret-123" not in str(problem)


def test_python_dotenv_logs_nothing_itself(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    parse_dotenv("broken line with SECRET_VALUE_123\n")
    assert "SECRET_VALUE_123" not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("dotenv")]


def test_missing_file_is_empty_and_not_an_error(tmp_path: Path) -> None:
    env = load_dotenv_file(tmp_path / ".env")
    assert env.values == {} and env.problems == () and not env.exists


def test_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=\xff\xfe\n")
    [problem] = load_dotenv_file(path).problems
    assert problem.where == str(path) and "cannot be read" in problem.message


def test_dotenv_repr_does_not_show_values() -> None:
    env = parse_dotenv("SIGNING=value-nobody-may-see\n")
    assert "value-nobody-may-see" not in repr(env)


def test_a_line_without_equals_is_named_by_number_not_by_its_text() -> None:
    """A bare secret pasted on a line of its own is a "name without a value" to python-dotenv."""
    env = parse_dotenv("OK=1\nsk_live_51HbarePastedSecretValue\n", "proj/.env")
    [problem] = env.problems
    assert problem.where == "proj/.env:2" and "has no '='" in problem.message
    assert "sk_live_51HbarePastedSecretValue" not in str(problem)


@pytest.mark.parametrize("line", ["A=a\x00b", "A='a\x00b'", "A=\"a\x00\"", "A\x00B=1"])
def test_a_nul_byte_is_refused_with_its_line(line: str) -> None:
    env = parse_dotenv(f"OK=1\n{line}\nLAST=2\n", "proj/.env")
    [problem] = env.problems
    assert problem.where == "proj/.env:2" and "NUL byte" in problem.message
    assert env.values == {"OK": "1", "LAST": "2"}


def test_exponential_interpolation_is_capped_and_reported_at_its_line() -> None:
    lines = ["A0=0123456789"] + [f"A{i}=${{A{i - 1}}}${{A{i - 1}}}" for i in range(1, 40)]
    env = parse_dotenv("\n".join(lines) + "\n", "proj/.env")
    [problem] = env.problems
    # 10 * 2**13 = 81920 > 65536: line 14 (A13) is the first too long.
    assert problem.where == "proj/.env:14" and f"more than {MAX_VALUE_LENGTH} characters" in problem.message
    assert all(len(v) <= MAX_VALUE_LENGTH for v in env.values.values())


def test_many_large_values_are_capped_in_total() -> None:
    big = "x" * (MAX_VALUE_LENGTH - 1)
    lines = [f"V{i}={big}" for i in range(MAX_TOTAL_LENGTH // len(big) + 2)]
    env = parse_dotenv("\n".join(lines) + "\n", "proj/.env")
    [problem] = env.problems
    assert "in all" in problem.message
    assert sum(map(len, env.values.values())) <= MAX_TOTAL_LENGTH


def test_interpolation_reads_earlier_lines_then_the_given_environment() -> None:
    env = parse_dotenv("A=${B:-dflt}\nHOME=/file\nC=${A}:${HOME}:${USER}:${NONE}\n",
                       environ={"HOME": "/env", "USER": "u"})
    assert env.values == {"A": "dflt", "HOME": "/file", "C": "dflt:/file:u:"}
