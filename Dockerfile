# The webapp under `python -m supervisor up`, which runs as PID 1: it forwards SIGTERM to its
# workers as a graceful drain, reaps orphaned processes, and exits 0 on a clean stop (1 runtime
# failure, 2 configuration, 3 database, 4 port). No tini or dumb-init needed. The wheel holds the
# supervisor only: the webapp is imported from /app, its libraries come from the `example` extra.
#
#   docker build -t webapp .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=... -e BETTER_AUTH_SECRET=... webapp
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install '.[example]' \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /app webapp \
    && mkdir -p -m 0700 /app/.supervisor/run \
    && chown -R webapp:webapp /app/.supervisor
# Production settings (listen on 0.0.0.0, status API for probes); Kubernetes mounts its
# ConfigMap over /etc/webapp.
COPY deploy/container/supervisor.toml /etc/webapp/supervisor.toml

USER 10001
EXPOSE 8000 8787
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/readyz', timeout=2)"]
ENTRYPOINT ["python", "-m", "supervisor"]
CMD ["up", "--project-dir", "/app", "--config", "/etc/webapp/supervisor.toml"]
