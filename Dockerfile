# syntax=docker/dockerfile:1
# canaryd in a container: built in one stage, run in a slim one as a
# non-root user. docs/deploy.md has the run command, the volume and how to
# give it your config.
#
#   docker build -t canaryd .
#   docker run -d --name canaryd -p 7600:7600 -v canaryd-data:/var/lib/canaryd \
#     -v $PWD/canaryd.yaml:/etc/canaryd/canaryd.yaml:ro canaryd

# ---- build: the release binary (the workspace's lock file, as CI builds it)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin canaryd \
 && install -D -m 0755 target/release/canaryd /out/canaryd

# ---- run: glibc (the daemon re-executes itself once with a fixed malloc
# threshold, a glibc setting), CA roots for https endpoints, curl for the
# health check; nothing else.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 canaryd \
 && useradd --system --uid 10001 --gid canaryd --home-dir /var/lib/canaryd \
      --shell /usr/sbin/nologin canaryd \
 && install -d -o canaryd -g canaryd -m 0700 /var/lib/canaryd
COPY --from=build /out/canaryd /usr/local/bin/canaryd
COPY rollout-policies/ /etc/canaryd/rollout-policies/
COPY packaging/docker/canaryd.yaml /etc/canaryd/canaryd.yaml
USER 10001:10001
VOLUME ["/var/lib/canaryd"]
EXPOSE 7600
# /healthz answers 200 while the process runs (no token needed).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:7600/healthz"]
# SIGTERM drains (docker stop's default signal); give it the time to.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/canaryd"]
CMD ["serve", "--config", "/etc/canaryd/canaryd.yaml"]
