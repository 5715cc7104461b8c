# coalitiond container image: slim Debian (glibc: dcap-qvl ships manylinux wheels, no musl
# ones), a non-root user, the data directory as a volume, `coalitiond` as the entrypoint.
#
#   docker build -t coalitiond .
#   docker run --rm \
#     -v "$PWD/member.toml:/etc/coalitiond/member.toml:ro" \
#     -v "$PWD/member.key:/etc/coalitiond/member.key:ro" \
#     -v coalitiond-data:/var/lib/coalitiond \
#     -p 7000:7000 coalitiond run --config /etc/coalitiond/member.toml
#
# The key file must be owned by uid 10001 with mode 0600 (coalitiond refuses a key file
# others can read); the config's data_dir should be /var/lib/coalitiond.
#
# `make system-test` builds this file unchanged with podman (--pull=never, the FROM image
# made locally with mmdebstrap) and runs a committee from it; deploy/ has a compose file and
# Kubernetes manifests for it (docs/operations.md, "Containers").

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY coalitiond ./coalitiond
# Wheels for the package and every runtime dependency; the final stage installs offline.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 coalitiond \
 && useradd --system --uid 10001 --gid coalitiond --home-dir /var/lib/coalitiond \
      --shell /usr/sbin/nologin coalitiond \
 && install -d -m 0700 -o coalitiond -g coalitiond /var/lib/coalitiond \
 && install -d -m 0755 /etc/coalitiond
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels coalitiond && rm -rf /wheels
USER coalitiond:coalitiond
WORKDIR /var/lib/coalitiond
VOLUME ["/var/lib/coalitiond"]
# Member links, and metrics when the config binds them to 0.0.0.0:9100.
EXPOSE 7000 9100
STOPSIGNAL SIGTERM
ENTRYPOINT ["coalitiond"]
CMD ["--help"]
