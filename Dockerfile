# The telemon image: `telemon run` by default; the same image runs `telemon simulate`.
#   docker build -t telemon .
#   docker run --rm -e TELEMON_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 telemon
# Without the `embedded` extra: the image talks to a real Kafka (no `telemon demo`/`broker`); with
# the `mqtt` extra, for `telemon bridge mqtt`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The package only (pyproject.toml names README.md as its readme and LICENSE as its license file;
# monitor/configs, the packaged default configs, links to configs/).
COPY pyproject.toml README.md LICENSE /tmp/telemon/
COPY monitor /tmp/telemon/monitor
COPY producers /tmp/telemon/producers
COPY configs /tmp/telemon/configs
RUN pip install '/tmp/telemon[mqtt]' && rm -rf /tmp/telemon
# Compile the kernels once, into the package's __pycache__, so a container starts without compiling.
RUN python -c "from monitor.govern.rules import load_rules; from monitor.pipeline import Pipeline; \
from monitor.settings import load_settings; s = load_settings(None); Pipeline(s, load_rules(s.rules_file))"

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin telemon \
    && install -d -o 10001 -g 10001 /var/lib/telemon
WORKDIR /app
COPY configs ./configs

# Inside a container the endpoint must listen beyond loopback for Prometheus and probes
# (the container's network namespace is the boundary); state (partition snapshots, this replica's copy
# of the model registry) in a volume.
ENV TELEMON_METRICS__HOST=0.0.0.0 \
    TELEMON_STATE_DIR=/var/lib/telemon
VOLUME /var/lib/telemon
EXPOSE 9464
USER 10001:10001

# Liveness: the consume loop turned within metrics.liveness_timeout_s (GET /healthz).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" \
        "http://127.0.0.1:${TELEMON_METRICS__PORT:-9464}/healthz"

ENTRYPOINT ["telemon"]
CMD ["run", "--config", "configs/monitor.yaml"]
