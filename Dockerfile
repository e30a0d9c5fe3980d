# syntax=docker/dockerfile:1
#
# One image with every tillstream binary: ingest, processor, publisher, shopify-writer,
# tillstream (ops CLI), iterable-sim and shopify-sim. docker-compose.yml picks the binary per service with `command`.
#
#   docker build -t tillstream:dev .
#   docker run --rm tillstream:dev tillstream --help
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts: the cargo registry
# and the target directory survive between builds, so a source change recompiles only the
# workspace crates, not librdkafka and the other dependencies.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

############################ builder ############################
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# librdkafka is built from source (rdkafka's cmake-build feature) with SSL and zstd.
# Versions are not pinned: Debian point releases replace them, and a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The target dir lives in a cache mount, so the binaries are copied out of it in the same step.
# --locked: build exactly the committed Cargo.lock (rdkafka-sys is pinned there on purpose).
# Only the seven shipped binaries (not the -bench ones under src/bin).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --release --locked \
      --bin ingest --bin processor --bin publisher --bin shopify-writer --bin tillstream --bin iterable-sim --bin shopify-sim; \
    mkdir -p /out; \
    for bin in ingest processor publisher shopify-writer tillstream iterable-sim shopify-sim; do \
      cp "target/release/$bin" /out/; \
    done

############################ runtime ############################
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# libssl3: librdkafka and reqwest (native-tls) link OpenSSL dynamically.
# ca-certificates: HTTPS to the real Iterable API.
# curl: the compose healthchecks call /readyz with it (bookworm-slim has no curl or wget).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tillstream \
 && useradd --system --uid 10001 --gid tillstream --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin tillstream

COPY --from=builder /out/ /usr/local/bin/

USER 10001:10001
WORKDIR /tmp

# 8080 ingest, 8081 processor, 8082 publisher, 8090 iterable-sim.
EXPOSE 8080 8081 8082 8090

# No ENTRYPOINT on purpose: the command names the binary, e.g. `processor --config /etc/x.toml`.
CMD ["tillstream", "--help"]
