# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full Rust toolchain, ship a small
# Debian runtime with only the binary (migrations are embedded in it).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/loadgen benches \
 && echo 'fn main() {}' > src/bin/main.rs \
 && echo 'fn main() {}' > src/bin/loadgen/main.rs \
 && echo 'fn main() {}' > benches/api.rs \
 && touch src/lib.rs \
 && cargo build --release --bin reservoir \
 && rm -rf src benches
COPY build.rs ./
COPY src src
COPY migrations migrations
COPY benches benches
RUN touch src/lib.rs src/bin/main.rs && cargo build --release --bin reservoir

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system reservoir \
 && useradd --system --gid reservoir --home-dir /data --shell /usr/sbin/nologin reservoir \
 && mkdir -p /data && chown reservoir:reservoir /data
COPY --from=build /src/target/release/reservoir /usr/local/bin/reservoir
USER reservoir
VOLUME ["/data"]
ENV RESERVOIR_LISTEN=0.0.0.0:8080 \
    RESERVOIR_DATA_DIR=/data \
    RESERVOIR_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["/usr/local/bin/reservoir"]
