# edge-cloud-controller-manager: the controller as a container.
# Build:  docker build -t edge-cloud-controller-manager:0.1.0 .
# Runs `edge-ccm run` as a non-root user on a read-only root filesystem (see manifests/).
#
# The base images are pinned by the digest of their multi-platform index, so every build uses
# exactly these images:
# - node:24-bookworm-slim: the digest recorded for that tag by the official images'
#   docker-library/repo-info (repos/node/remote/24-bookworm-slim.md; Node 24.19.0, 2026-08-25);
# - gcr.io/distroless/nodejs24-debian12:nonroot: the digest pinned for that tag in public
#   Dockerfiles, not checked against the registry from here.
# To update: `crane digest node:24-bookworm-slim` (or `docker buildx imagetools inspect`), or let
# Renovate's dockerfile manager keep these ARG defaults current. A build against images of the
# same names without a registry passes them instead:
#   docker build --build-arg NODE_IMAGE=node:24-bookworm-slim --build-arg RUNTIME_IMAGE=... .
ARG NODE_IMAGE=node:24-bookworm-slim@sha256:a9f5f7c91a432850b2a8a7797adf5eadb6c733ceed61167806cee7ea7fbc29df
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:nonroot@sha256:14d42e2511532589a7c7e01a753667a74fcc96266e137e8125006b87b0c32d0a

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The devDependency `node` (the pinned Node 24 for npm scripts) is not needed here: the base has it.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY scripts/bundle.ts ./scripts/
COPY src ./src
# One tree-shaken bundle (and its source maps): the image needs no node_modules.
RUN node scripts/bundle.ts && mkdir /compile-cache

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="edge-cloud-controller-manager" \
      org.opencontainers.image.description="Kubernetes LoadBalancer controller for edge and home clusters: publishes Services through the LAN's Internet gateway (UPnP IGD, NAT-PMP, PCP)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
COPY --from=build /src/dist/edge-ccm*.mjs /src/dist/edge-ccm*.mjs.map ./
# 65532 is distroless's "nonroot".
USER 65532:65532
# The bundle's compiled code, made here by the user and the Node that run it: a start then skips
# most compiling (docs/benchmarks.md, "Startup"). Only read at run time, on a read-only root.
ENV NODE_COMPILE_CACHE=/app/compile-cache
COPY --from=build --chown=65532:65532 /compile-cache ./compile-cache
COPY scripts/warm-compile-cache.mjs ./
RUN ["/nodejs/bin/node", "/app/warm-compile-cache.mjs"]
RUN ["/nodejs/bin/node", "/app/edge-ccm.mjs", "--help"]
# /healthz and /readyz; /metrics (HTTPS).
EXPOSE 10258 10259
ENTRYPOINT ["/nodejs/bin/node", "/app/edge-ccm.mjs"]
CMD ["run"]
