"""``GET /``: the status document as a small self-refreshing HTML page.

Rendered on the server from the same document as ``/status`` and the CLI table (see
:mod:`supervisor.status.display`), so it needs no JavaScript and no external assets: inline CSS and a
``<meta http-equiv="refresh">`` re-fetch. Every value is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from supervisor.status.display import (
    COLUMNS,
    database_line,
    duration,
    health_line,
    reload_line,
    summary_line,
    worker_row,
)

REFRESH_SECONDS = 2

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em}
table{border-collapse:collapse;margin:.6em 0 1.2em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee}
.state-running{color:#176b2c;font-weight:600}
.state-backoff,.state-starting,.state-reloading,.state-waiting_for_database{color:#8a5a00;font-weight:600}
.state-fatal,.state-stopped,.state-stopping{color:#a11;font-weight:600}
pre{background:#f0f0f0;padding:.4em;margin:.3em 0;white-space:pre-wrap}
.muted{color:#666}
"""


def _worker_rows(doc: dict[str, Any]) -> str:
    """The web workers (``worker-N``), then every program's instances (``program-NAME-N``)."""
    rows = []
    everything = [("web", w) for w in doc["workers"]]
    everything += [(name, w) for name, instances in doc.get("programs", {}).items() for w in instances]
    for program, worker in everything:
        cells = worker_row(worker, program)
        row_id = f"worker-{int(worker['slot'])}" if program == "web" else f"program-{program}-{int(worker['slot'])}"
        tds = "".join(
            f'<td data-field="{escape(name.lower().replace(" ", "_"))}"'
            + (f' class="state-{escape(str(worker["state"]))}"' if name == "STATE" else "")
            + f">{escape(cell)}</td>"
            for name, cell in zip(COLUMNS, cells, strict=False))
        rows.append(f'<tr id="{escape(row_id)}" data-pid="{escape(cells[1])}" '
                    f'data-state="{escape(str(worker["state"]))}">{tds}</tr>')
        if worker.get("stderr_tail"):
            tail = escape("\n".join(worker["stderr_tail"]))
            rows.append(f'<tr><td colspan="{len(COLUMNS)}">last stderr lines:<pre>{tail}</pre></td></tr>')
    return "\n".join(rows)


def _env_rows(env: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, entry in env.items():
        value = escape(entry["value"]) if "value" in entry else '<span class="muted">(hidden)</span>'
        rows.append(f"<tr><td>{escape(name)}</td><td>{escape(entry['where'])}</td><td>{value}</td></tr>")
    return "\n".join(rows) or '<tr><td colspan="3" class="muted">none</td></tr>'


def _links(doc: dict[str, Any]) -> str:
    # The app's own /metrics (the bundled webapp's pool figures) come from whichever worker
    # answers; the supervisor's are on this server.
    app = escape(str(doc.get("url") or ""))
    if not app:
        return ""
    return (f'<p id="links">app: <a href="{app}/">{app}</a> &middot; '
            f'<a id="app-metrics" href="{app}/metrics">app metrics</a> (one worker\'s) &middot; '
            '<a href="/metrics">supervisor metrics</a></p>')


def _health(doc: dict[str, Any]) -> str:
    """The recycling line, with a link to the last hang's stacks, which follow it."""
    health = doc.get("health") or {}
    sup = doc["supervisor"]
    line = health_line(health, sup["started_at"] + sup["uptime"])
    if not line:
        return ""
    hang = health.get("last_hang")
    if not hang:
        return f'<p id="health">{escape(line)}</p>'
    return (f'<p id="health">{escape(line)} &middot; <a href="#last-hang">where it was stuck</a></p>\n'
            f'<h2 id="last-hang">Last hang: web.{int(hang["slot"])} pid {int(hang["pid"])}</h2>\n'
            f'<pre id="last-hang-stacks">{escape(str(hang["stacks"]))}</pre>')


def render_dashboard(doc: dict[str, Any]) -> str:
    sup = doc["supervisor"]
    headers = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    state = escape(str(sup["state"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>supervisor: {state}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Supervisor <span id="supervisor-state" class="state-{state}">{state}</span></h1>
<p id="summary">{escape(summary_line(doc))}</p>
<p class="muted">version {escape(str(sup['version']))}, pid {int(sup['pid'])}, started {duration(sup['uptime'])} ago;
refreshes every {REFRESH_SECONDS}s</p>
{_links(doc)}
<h2>Workers</h2>
<table id="workers"><thead><tr>{headers}</tr></thead><tbody>
{_worker_rows(doc)}
</tbody></table>
<p id="database">{escape(database_line(doc['database']))}</p>
<p id="reload">{escape(reload_line(doc['reload']))}</p>
{_health(doc)}
<h2>Environment</h2>
<table id="env"><thead><tr><th>NAME</th><th>FROM</th><th>VALUE</th></tr></thead><tbody>
{_env_rows(doc['env'])}
</tbody></table>
</body></html>
"""
