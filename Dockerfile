# upm as a container entrypoint: `podman run -i --rm --network=none IMAGE < request.json`.
#
# BASE needs /usr/bin/python3 (for Python class plugins), /bin/sh and cat (for the Echo
# plugin), glibc, and a world-writable /tmp. Without a registry, scripts/build-image.sh
# makes one from this machine's files; with one, see docs/container.md ("Container image").
# upm, upm-egress and upm-texttools come from `cargo build --release` against the same glibc.
# COPY keeps the context's modes and upm refuses plugin files writable by group or others:
# build from a context without them (scripts/build-image.sh copies it `chmod -R go-w`).
ARG BASE=localhost/upm-base:latest
FROM ${BASE}
# Where the binaries are in the build context (the tests use their own profile's).
ARG BIN_DIR=target/x86_64-unknown-linux-gnu/release

COPY ${BIN_DIR}/upm /usr/local/bin/upm
# The egress proxy of a plugin with a network allowlist (docs/egress.md): beside upm.
COPY ${BIN_DIR}/upm-egress /usr/local/bin/upm-egress
COPY image/upm_config.json /opt/upm/upm_config.json
COPY schemas/ /opt/upm/schemas/
COPY policies/ /opt/upm/policies/
COPY plugins/ /opt/upm/plugins/
COPY ${BIN_DIR}/upm-texttools /opt/upm/target/release/upm-texttools
# The audit log's directory, writable by upm's user (COPY, so no RUN and no shell is needed).
COPY --chown=10001:10001 image/log/ /var/log/upm/

ENV UPM_CONFIG_PATH=/opt/upm/upm_config.json
USER 10001:10001
WORKDIR /opt/upm
ENTRYPOINT ["/usr/local/bin/upm"]
CMD ["run"]
