"""A background worker program for the example configuration: ``python -m webapp.worker``.

It stands for the queue consumers and schedulers a real backend runs beside its web app: every
``NOTES_WORKER_INTERVAL`` seconds (default 5) it counts the notes and logs the figure. It uses
the same settings and database layer as the app, survives a database outage (it logs and tries
again), and stops cleanly on SIGTERM, which is what the supervisor sends first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from sqlalchemy import func, select

from webapp.config import WebConfigError, load_web_settings
from webapp.db import Database, DatabaseFailure
from webapp.models import Note

logger = logging.getLogger("webapp.worker")


async def count_notes(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Note)) or 0)


async def run(interval: float) -> int:
    settings = load_web_settings(os.environ)
    db = Database(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("worker: counting notes every %gs", interval)
    try:
        while not stop.is_set():
            try:
                logger.info("worker: %d note(s)", await count_notes(db))
            except DatabaseFailure as failure:
                logger.warning("worker: cannot count notes (%s); trying again", failure)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
    finally:
        await db.close()
    logger.info("worker: stopped")
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        interval = float(os.environ.get("NOTES_WORKER_INTERVAL", "5"))
        return asyncio.run(run(interval if interval > 0 else 5.0))
    except (WebConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
