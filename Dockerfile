# deskbell: multi-stage image. Wheels are built in the first stage, so the final image has no
# compiler, no build tools and no pip cache; it runs as an unprivileged user.
#   docker build -t deskbell .             (podman: add --format docker for the HEALTHCHECK)
#   docker run -p 127.0.0.1:8000:8000 -e DESKBELL_API_KEYS=<key>:admin -v deskbell:/data deskbell
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check -q pip==26.3 \
 && /opt/build/bin/pip wheel --no-cache-dir -q --wheel-dir /wheels '.[otel]'

FROM ${BASE_IMAGE}
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/deskbell \
 && /opt/deskbell/bin/pip install --no-cache-dir --disable-pip-version-check -q --no-index \
      --find-links /wheels 'deskbell[otel]' \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin deskbell \
 && mkdir -p /data /etc/deskbell \
 && chown deskbell /data
ENV PATH=/opt/deskbell/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DESKBELL_HOST=0.0.0.0 \
    DESKBELL_PORT=8000 \
    DESKBELL_DATABASE_URL=sqlite+aiosqlite:////data/deskbell.db \
    DESKBELL_LOG_FORMAT=json
WORKDIR /data
VOLUME ["/data"]
USER deskbell
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DESKBELL_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["deskbell"]
# Listening on 0.0.0.0 needs credentials (DESKBELL_API_KEYS, DESKBELL_WEBHOOK_SECRETS or a key
# created with `deskbell apikey create`), or `serve --insecure` for a local demo.
CMD ["serve"]
