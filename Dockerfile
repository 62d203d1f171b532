# One image for both roles: `metallb-bgp controller ...` and `metallb-bgp speaker ...` (the chart's
# args), with ExaBGP (a dependency of the package) installed beside the interpreter, where the speaker
# looks for it first. Build from the repository root:  docker build -t metallb-bgp:0.1.0 .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/metallb-bgp
WORKDIR /src
COPY pyproject.toml README.md ./
COPY metallb_bgp ./metallb_bgp
RUN /opt/metallb-bgp/bin/pip install . \
 && /opt/metallb-bgp/bin/exabgp version \
 && /opt/metallb-bgp/bin/metallb-bgp --version

FROM python:3.11-slim
LABEL org.opencontainers.image.title="metallb-bgp" \
      org.opencontainers.image.description="MetalLB-compatible BGP load balancer on ExaBGP" \
      org.opencontainers.image.licenses="Apache-2.0"
# A named user: ExaBGP looks its user up in /etc/passwd (exabgp.daemon.user). UID/GID 65532 is the
# chart's runAsUser/runAsGroup.
RUN groupadd --system --gid 65532 metallb \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin metallb
COPY --from=build /opt/metallb-bgp /opt/metallb-bgp
# The chart mounts the root filesystem read-only: no bytecode caches, HOME on the /tmp emptyDir.
ENV PATH=/opt/metallb-bgp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
ENTRYPOINT ["metallb-bgp"]
CMD ["--help"]
