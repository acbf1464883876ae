# One image for every Switchboard process: the command picks the role
# (`switchboard ingress`, `switchboard consume [GROUP...]`).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOG_FORMAT=json \
    HOST=0.0.0.0 \
    PORT=8000 \
    SWITCHBOARD_HOME=/var/lib/switchboard

# SWITCHBOARD_HOME holds the ingress's spool (webhooks kept while Redis is away): it must be
# writable by the runtime user, and a volume so that a restarted container drains it.
RUN useradd --system --create-home --home-dir /home/switchboard switchboard \
    && mkdir -p /var/lib/switchboard \
    && chown switchboard:switchboard /var/lib/switchboard
WORKDIR /app

# Dependencies first, pinned, so code changes do not reinstall them.
COPY pyproject.toml constraints.txt README.md ./
COPY ingress/__init__.py ingress/
COPY consumers/__init__.py consumers/
RUN pip install -c constraints.txt -e .

COPY schema.sql streams.yaml ./
COPY ingress/ ingress/
COPY consumers/ consumers/
COPY scripts/ scripts/

VOLUME /var/lib/switchboard
USER switchboard
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" || exit 1
CMD ["switchboard", "ingress"]
