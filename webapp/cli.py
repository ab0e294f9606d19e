"""``python -m webapp token SUBJECT [--ttl 1h]``: a bearer token for trying the API by hand.

The token is signed with the secret the webapp uses when started by ``python -m supervisor up``
from the same project directory: the environment, then ``.env``, then ``supervisor.toml``'s
``[env]`` defaults, resolved by the supervisor's own settings code, with ``aud``/``iss`` when
``AUTH_AUDIENCE``/``AUTH_ISSUER`` are set. The token alone goes to stdout, so
``TOKEN=$(python -m webapp token alice)`` works; a note on stderr says when it expires.

Exit codes: 0 printed, 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from supervisor.config.settings import problem_redactor, resolve_settings
from supervisor.errors import ConfigError
from webapp.auth import token_policy
from webapp.config import WebConfigError, load_web_settings
from webapp.models import OWNER_MAX
from webapp.tokens import issue_token, parse_ttl

EXIT_OK = 0
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m webapp", description="Development helpers for the webapp.")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print a bearer token for SUBJECT, signed with the configured secret")
    token.add_argument("subject", metavar="SUBJECT", help="the user: the token's sub claim")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h; at most 30d)")
    token.add_argument("--project-dir", default=".", help="directory holding supervisor.toml and .env")
    token.add_argument("--config", help="path of supervisor.toml (default: in the project directory)")
    return parser


def cmd_token(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if not 1 <= len(args.subject) <= OWNER_MAX:
        print(f"error: SUBJECT must be 1 to {OWNER_MAX} characters", file=sys.stderr)
        return EXIT_USAGE
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        print(f"error: --ttl {exc}", file=sys.stderr)
        return EXIT_USAGE
    project_dir = Path(args.project_dir)
    config = Path(args.config) if args.config else None
    try:
        settings = load_web_settings(resolve_settings(project_dir, environ, config_path=config).environ)
    except ConfigError as exc:
        redact = problem_redactor(project_dir, environ, config)
        for problem in exc.problems:
            print(redact(f"error: {problem}"), file=sys.stderr)
        return EXIT_USAGE
    except WebConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    now = time.time()
    print(issue_token(args.subject, token_policy(settings), ttl, now=now))
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now + ttl))
    print(f"token for {args.subject!r}, valid until {expires} ({settings.mode} settings)", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        return cmd_token(args, os.environ if environ is None else environ)
    return EXIT_USAGE  # pragma: no cover - argparse requires a command
