# edge-cloud-controller-manager: the controller as a container.
# Build:  docker build -t edge-cloud-controller-manager:0.1.0 .
# Runs `edge-ccm run` as a non-root user on a read-only root filesystem (see manifests/).

FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The devDependency `node` (the pinned Node 24 for npm scripts) is not needed in the image.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

FROM node:24-bookworm-slim AS production-dependencies
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts

FROM gcr.io/distroless/nodejs24-debian12:nonroot
LABEL org.opencontainers.image.title="edge-cloud-controller-manager" \
      org.opencontainers.image.description="Kubernetes LoadBalancer controller for edge and home clusters: publishes Services through the LAN's Internet gateway (UPnP IGD)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
COPY --from=production-dependencies /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
# 65532 is distroless's "nonroot".
USER 65532:65532
EXPOSE 10258
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/bin.js"]
CMD ["run"]
