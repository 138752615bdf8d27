# syntax=docker/dockerfile:1
# The iocsync container image: a release build on Debian bookworm, run as an unprivileged user with
# its state (SQLite database, dead letters) on the /data volume.
#
#   docker build -t iocsync:0.1.0 .
#   docker run --rm --env-file iocsync.env -v iocsync-data:/data iocsync:0.1.0 check
#
# Configuration is environment only (see docs/readme/deploy.md); `run` is the default command.

# Any Rust release from the crate's rust-version (1.85) on builds it; `1` is the newest stable.
ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep the registry and compiled dependencies between builds; the binary is copied out of
# the cached target directory because the cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin iocsync \
    && install -D -m 0755 target/release/iocsync /out/iocsync

FROM debian:bookworm-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="iocsync" \
      org.opencontainers.image.description="Threat-intel indicator sync daemon: OpenCTI live streams and MISP into SentinelOne, Sekoia.io, Zeek and JSONL" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# ca-certificates for tools run inside the container; iocsync itself carries Mozilla's CA roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 iocsync \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin iocsync \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=build /out/iocsync /usr/local/bin/iocsync
# The metrics endpoint binds loopback by default; in a container only every interface is reachable
# through a port mapping, which then decides who can scrape it.
ENV IOCSYNC_STATE_DIR=/data IOCSYNC_HTTP_BIND=0.0.0.0
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
# /metrics, /healthz and /readyz when CONNECTOR_EXPOSE_METRICS=true (CONNECTOR_METRICS_PORT).
EXPOSE 9095
# `iocsync health` asks /readyz on the configured address (no curl in the image): unhealthy while the
# OpenCTI stream is down or a sink refuses the credential. It needs CONNECTOR_EXPOSE_METRICS=true, as
# docker-compose.yml sets; without it the check reports the endpoint off.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["iocsync", "health"]
# SIGTERM (docker stop) drains in-flight batches and writes the checkpoint before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["iocsync"]
CMD ["run"]
