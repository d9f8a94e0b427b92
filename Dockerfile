# syntax=docker/dockerfile:1
#
# The native registry's container image, for those who build with Docker or BuildKit:
#
#   epoch="$(git log -1 --format=%ct)"
#   docker build -t openregistry:0.1.0 \
#       --build-arg REVISION="$(git rev-parse HEAD)" \
#       --build-arg CREATED="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)" \
#       --build-arg SOURCE_DATE_EPOCH="$epoch" .
#
# It builds the binary the way scripts/package-image does (x86_64-unknown-linux-musl, +crt-static,
# the bundled SQLite compiled with musl-gcc, paths remapped, debug info stripped) and gives the
# image the same configuration: scratch, user 65532:65532, the /data volume, OPENREGISTRY_* defaults,
# port 8080, `openregistry health` as the health check, the org.opencontainers.image.* labels.
# Its digest is not scripts/package-image's: BuildKit writes its own layers and config. With
# SOURCE_DATE_EPOCH set, BuildKit (0.13+) clamps file times to it, so rebuilds can match each other.
#
# Not tested: CI has no Docker daemon. CI builds and tests the image with scripts/package-image
# (scripts/test image); keep the two in step when changing either.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CFLAGS_x86_64_unknown_linux_musl="-ffile-prefix-map=/src=/openregistry -ffile-prefix-map=/usr/local/cargo=/cargo -ffile-prefix-map=/src/target=/target" \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="--remap-path-prefix=/src=/openregistry --remap-path-prefix=/usr/local/cargo=/cargo --remap-path-prefix=/usr/local/rustup=/rustup --remap-path-prefix=/src/target=/target -C target-feature=+crt-static -C strip=debuginfo"
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p openregistry-native \
    && mkdir -p /rootfs/data /rootfs/etc /rootfs/tmp \
    && cp target/x86_64-unknown-linux-musl/release/openregistry /rootfs/openregistry \
    && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/data:/sbin/nologin\n' > /rootfs/etc/passwd \
    && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
    && chown 65532:65532 /rootfs/data \
    && chmod 1777 /rootfs/tmp

FROM scratch
ARG REVISION=unknown
ARG VERSION=0.1.0
ARG CREATED=1970-01-01T00:00:00Z
COPY --from=build /rootfs/ /
USER 65532:65532
ENV OPENREGISTRY_DATA_DIR=/data \
    OPENREGISTRY_LISTEN=0.0.0.0:8080
EXPOSE 8080/tcp
VOLUME ["/data"]
WORKDIR /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 CMD ["/openregistry", "health"]
LABEL org.opencontainers.image.title="openregistry" \
      org.opencontainers.image.description="OpenRegistry as a native server: hyper/tokio host with embedded filesystem and SQLite defaults." \
      org.opencontainers.image.source="https://github.com/openregistry/openregistry" \
      org.opencontainers.image.url="https://github.com/openregistry/openregistry" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/openregistry"]
CMD ["serve"]
