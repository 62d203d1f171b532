# One image for both roles: `metallb-bgp controller ...` and `metallb-bgp speaker ...` (the chart's
# args), with ExaBGP (a dependency of the package) installed beside the interpreter, where the speaker
# looks for it first. The steps are image/steps.sh; this file only orders them.
#
#   docker build -t metallb-bgp:0.1.0 .     (from the repository root)
#   make image                              (no Docker: buildah builds this same file; docs/installation.md)
#
# BASE is Debian bookworm: `docker build` pulls debian:bookworm-slim, `make image` passes a root
# filesystem it made with mmdebstrap.

ARG BASE=debian:bookworm-slim

FROM ${BASE} AS wheels
COPY image/steps.sh /steps.sh
RUN sh /steps.sh packages
COPY pyproject.toml README.md /src/
COPY metallb_bgp /src/metallb_bgp
COPY image/wheels /src/image/wheels
RUN sh /steps.sh wheels /src /wheels

FROM ${BASE}
LABEL org.opencontainers.image.title="metallb-bgp" \
      org.opencontainers.image.description="MetalLB-compatible BGP load balancer on ExaBGP" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY image/steps.sh /steps.sh
RUN sh /steps.sh packages
COPY --from=wheels /wheels /wheels
RUN sh /steps.sh install /wheels && rm -rf /wheels /steps.sh
# The chart mounts the root filesystem read-only: no bytecode caches, HOME on the /tmp emptyDir.
ENV PATH=/opt/metallb-bgp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
ENTRYPOINT ["metallb-bgp"]
CMD ["--help"]
