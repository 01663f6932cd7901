# One image for every role: `geoedge dns`, `geoedge edge`, `geoedge origin`, and the client
# (dig, curl and `geoedge`). docker-compose.yml runs it; `python -m geoedge.compose` writes both
# that file and deploy/topology.toml from examples/demo.toml.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN apt-get update \
    && apt-get install -y --no-install-recommends bind9-dnsutils curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY geoedge ./geoedge
COPY geodns ./geodns
COPY geodata ./geodata
COPY edge ./edge
COPY origin ./origin
RUN pip install --no-cache-dir . && rm -rf /src

COPY examples/content /srv/geoedge/content
COPY deploy/topology.toml /etc/geoedge/topology.toml

# Unprivileged. GeoDNS binds port 53 because compose sets the per-container sysctl
# net.ipv4.ip_unprivileged_port_start=0 (no capability added, nothing changes on the host).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin geoedge
USER geoedge
WORKDIR /srv/geoedge

EXPOSE 53/udp 53/tcp 8080/tcp
ENTRYPOINT ["geoedge"]
CMD ["--help"]
