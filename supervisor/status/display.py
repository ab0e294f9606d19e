"""Human-readable text from a ``/status`` document, shared by the CLI table and the dashboard.

Pure functions: a document in, short strings out (``2m05s``, ``41.2 MiB``, ``backoff (retry in
1.5s)``), so ``python -m supervisor status`` and ``GET /`` always say the same thing.
"""

from __future__ import annotations

from typing import Any

# What a worker started from (the status document's reload.template.stage).
STAGES = {"project": "the project-stage template", "third-party": "the third-party template",
          "fresh": "a fresh interpreter"}
COLUMNS = ("SLOT", "PID", "STATE", "UPTIME", "RESTARTS", "MEMORY", "CPU", "LOOP LAG", "LAST EXIT")


def duration(seconds: float | None) -> str:
    """``59s``, ``2m05s``, ``3h07m``, ``2d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def lag(seconds: float | None) -> str:
    """``3 ms``, ``1.2s``; ``-`` before the first heartbeat."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f}s"


def worker_state(worker: dict[str, Any]) -> str:
    """The state, with why and what next for the states that need it."""
    state = str(worker["state"])
    if state == "backoff" and worker.get("retry_in") is not None:
        return f"backoff (retry in {worker['retry_in']:.1f}s)"
    if state == "fatal" and worker.get("fatal_reason"):
        return f"fatal: {worker['fatal_reason']}"
    if state == "waiting" and worker.get("waiting_for"):
        return str(worker["waiting_for"])
    return state


def last_exit(worker: dict[str, Any]) -> str:
    info = worker.get("last_exit")
    return str(info["description"]) if info else "-"


def worker_row(worker: dict[str, Any], program: str = "web") -> tuple[str, ...]:
    cpu = worker.get("cpu_percent")
    return (
        f"{program}.{worker['slot']}",
        str(worker["pid"]) if worker.get("pid") is not None else "-",
        worker_state(worker),
        duration(worker.get("uptime")),
        str(worker["restarts"]),
        size(worker.get("memory_rss")),
        f"{cpu:.1f}%" if cpu is not None else "-",
        lag(worker.get("loop_lag")),
        last_exit(worker),
    )


def database_line(db: dict[str, Any]) -> str:
    parts = [f"database: {db['state']}"]
    if db.get("latency_ms") is not None:
        parts.append(f"latency {db['latency_ms']:.1f} ms")
    if db.get("attempts"):
        parts.append(f"{db['attempts']} attempt(s)")
    if db.get("last_error"):
        parts.append(f"last error: {db['last_error']}")
    return ", ".join(parts)


def reload_line(reload: dict[str, Any]) -> str:
    parts = [f"reloads: {reload['count']}"]
    if reload.get("last_duration") is not None:
        parts.append(f"last took {reload['last_duration']:.2f}s")
    if reload.get("last_files"):
        parts.append("last trigger: " + ", ".join(reload["last_files"][:5]))
    if reload.get("last_error"):
        parts.append(f"last error: {reload['last_error']}")
    template = reload.get("template") or {}
    if template.get("stage"):
        parts.append(f"last worker from {STAGES.get(template['stage'], template['stage'])}"
                     + (f" ({template['why']})" if template.get("why") else ""))
    return ", ".join(parts)


def health_line(health: dict[str, Any] | None, now: float) -> str | None:
    """Recycled workers and the last hang, if any: ``recycled: 2 (requests 2); last hang: ...``."""
    if not health:
        return None
    parts = []
    recycled = {reason: count for reason, count in (health.get("recycled") or {}).items() if count}
    if recycled:
        by_reason = ", ".join(f"{reason} {count}" for reason, count in sorted(recycled.items()))
        parts.append(f"recycled: {sum(recycled.values())} ({by_reason})")
    hang = health.get("last_hang")
    if hang:
        where = f"; stacks in {hang['file']}" if hang.get("file") else ""
        parts.append(f"last hang: web.{hang['slot']} pid {hang['pid']}, {duration(now - hang['at'])} ago, no "
                     f"heartbeat for {hang['silent_for']:.1f}s{where}")
    return "; ".join(parts) or None


def summary_line(doc: dict[str, Any]) -> str:
    sup = doc["supervisor"]
    ready = "ready" if sup["ready"] else f"not ready ({sup['ready_reason']})"
    return (f"supervisor pid {sup['pid']} {sup['state']} ({sup['mode']}), up {duration(sup['uptime'])}, "
            f"{ready}; app {doc['url']}")


def table(rows: list[tuple[str, ...]], headers: tuple[str, ...] = COLUMNS) -> str:
    """Left-aligned columns separated by two spaces, like ``supervisorctl status``."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def render_text(doc: dict[str, Any]) -> str:
    """The whole human-readable status: summary, worker table, database and reload lines."""
    rows = [worker_row(w) for w in doc["workers"]]
    rows += [worker_row(w, name) for name, instances in doc.get("programs", {}).items() for w in instances]
    sup = doc["supervisor"]
    health = health_line(doc.get("health"), sup.get("started_at", 0) + sup["uptime"])
    return "\n".join([summary_line(doc), "", table(rows), "", database_line(doc["database"]),
                      reload_line(doc["reload"]), *([health] if health else [])])
