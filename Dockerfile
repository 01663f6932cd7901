# One image for every role: `geoedge dns`, `geoedge edge`, `geoedge origin`, and the client
# (dig, curl and `geoedge`). docker-compose.yml runs it; `python -m geoedge.deploy.compose` writes both
# that file and deploy/topology.toml from examples/demo.toml.
# Build stage: the wheels, with the optional C extensions compiled (gcc and the nghttp2 headers
# only live here): geodns's UDP fast path, the edge's head parser and its HTTP/2 layer.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libnghttp2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY geoedge ./geoedge
COPY geoconfig ./geoconfig
COPY geodns ./geodns
COPY geodata ./geodata
COPY edge ./edge
COPY origin ./origin
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[tls]" \
    && python -m zipfile -l /wheels/geoedge-*.whl | grep -q "geodns/_fastudp.*[.]so" \
    && python -m zipfile -l /wheels/geoedge-*.whl | grep -q "edge/_fasthttp.*[.]so" \
    && python -m zipfile -l /wheels/geoedge-*.whl | grep -q "edge/_nghttp2.*[.]so"

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN apt-get update \
    && apt-get install -y --no-install-recommends bind9-dnsutils curl libnghttp2-14 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "geoedge[tls]" && rm -rf /wheels

COPY examples/content /srv/geoedge/content
COPY deploy/topology.toml /etc/geoedge/topology.toml

# Unprivileged. GeoDNS binds port 53 because compose sets the per-container sysctl
# net.ipv4.ip_unprivileged_port_start=0 (no capability added, nothing changes on the host).
# /certs: the compose demo's certs volume (its HTTPS certificates), writable by that user.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin geoedge \
    && mkdir /certs && chown geoedge /certs
USER geoedge
WORKDIR /srv/geoedge

EXPOSE 53/udp 53/tcp 8080/tcp 8443/tcp
ENTRYPOINT ["geoedge"]
CMD ["--help"]
