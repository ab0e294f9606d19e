"""Command-line options shared by the subcommands: one place for ``--project-dir`` and ``--config``."""

from __future__ import annotations

import argparse


def add_project_options(parser: argparse.ArgumentParser, what: str = "supervisor.toml and .env") -> None:
    parser.add_argument("--project-dir", default=".", help=f"directory holding {what}")
    parser.add_argument("--config", help="path of supervisor.toml (default: in the project directory)")
