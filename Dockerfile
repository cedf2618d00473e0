# edge-cloud-controller-manager: the controller as a container.
# Build:  docker build -t edge-cloud-controller-manager:0.1.0 .
# Runs `edge-ccm run` as a non-root user on a read-only root filesystem (see manifests/).
#
# The image holds only what Node runs on: its binary (stripped) and the shared libraries it
# links, found with ldd in the build stage, so every architecture gets its own (linux/amd64 and
# linux/arm64 alike); a passwd and group naming the user 65532; nsswitch.conf; the command as one
# CommonJS file with its source map, and the V8 startup snapshot built from it, which is what
# runs. No shell, no package manager, no CA store: the apiserver's CA comes from the
# ServiceAccount (or the kubeconfig), and Node carries its own root certificates, ICU and time
# zone data. Sizes: docs/benchmarks.md ("The image").
#
# The base image is pinned by the digest of its multi-platform index, so every build uses
# exactly that image: the digest recorded for node:24-bookworm-slim by the official images'
# docker-library/repo-info (repos/node/remote/24-bookworm-slim.md; Node 24.19.0, 2026-08-25).
# To update: `crane digest node:24-bookworm-slim` (or `docker buildx imagetools inspect`), or let
# Renovate's dockerfile manager keep the ARG default current. A build against an image of the
# same name without a registry passes it instead:
#   docker build --build-arg NODE_IMAGE=node:24-bookworm-slim .
ARG NODE_IMAGE=node:24-bookworm-slim@sha256:a9f5f7c91a432850b2a8a7797adf5eadb6c733ceed61167806cee7ea7fbc29df

# The runtime's root filesystem, in /rootfs: Node, stripped; the dynamic loader and every library
# Node links (libc, libm, libstdc++, libgcc_s…) as ldd finds them for this architecture, copied
# under the paths it names with links resolved; the users root and 65532 (distroless's "nonroot",
# the user the manifests name); glibc's lookups from files (and DNS for hosts).
FROM ${NODE_IMAGE} AS rootfs
# strip takes Node's symbol table and debug sections off: the image is 4.5 MB smaller compressed
# (docs/benchmarks.md, "The image"). Native frames keep the names Node exports (.dynsym), which
# its own crash reports and diagnostic reports use; perf and gdb see no names for the others.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
RUN set -eu; \
    node="$(command -v node)"; \
    install -d /rootfs/nodejs/bin /rootfs/etc; \
    strip -o /rootfs/nodejs/bin/node "$node"; \
    libs="$(ldd "$node" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')"; \
    [ -n "$libs" ]; \
    cp --parents -L $libs /rootfs; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group; \
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > /rootfs/etc/nsswitch.conf; \
    install -d -m 0700 -o 65532 -g 65532 /rootfs/home/nonroot; \
    install -d -m 1777 /rootfs/tmp

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The devDependency `node` (the pinned Node 24 for npm scripts) is not needed here: the base has it.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY scripts/bundle.ts ./scripts/
COPY src ./src
# One tree-shaken CommonJS file for the snapshot (src/snapshot.ts), its source map and how Node
# builds it (snapshot.json): the image needs no node_modules. The directory the snapshot is built
# into, for the user 65532.
RUN node scripts/bundle.ts && mkdir /snapshot

FROM scratch
COPY --from=rootfs /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="edge-cloud-controller-manager" \
      org.opencontainers.image.description="Kubernetes LoadBalancer controller for edge and home clusters: publishes Services through the LAN's Internet gateway (UPnP IGD, NAT-PMP, PCP)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
COPY --from=build /src/dist/snapshot/edge-ccm.cjs /src/dist/snapshot/edge-ccm.cjs.map /src/dist/snapshot/snapshot.json ./
USER 65532:65532
# The startup snapshot: every module of the command loaded and the heap saved, here, by the user
# and the Node that run it (a blob is valid only for the Node that built it). A start deserialises
# it instead of loading the modules: 100-200 ms less CPU and 4 MiB less RSS idle than the bundle
# with its compile cache (docs/benchmarks.md, "Footprint and startup"). Only read at run time,
# on a read-only root. Node warns that the snapshot of some of its modules (child_process, dgram,
# readline) is not yet verified; the e2e tests run this image.
COPY --from=build --chown=65532:65532 /snapshot ./snapshot
RUN ["/nodejs/bin/node", "--snapshot-blob", "/app/snapshot/edge-ccm.blob", "--build-snapshot-config", "/app/snapshot.json"]
RUN ["/nodejs/bin/node", "--snapshot-blob", "/app/snapshot/edge-ccm.blob", "--", "--help"]
# /healthz and /readyz; /metrics (HTTPS).
EXPOSE 10258 10259
# `--` ends Node's options: what follows (CMD, the pod's args) is the command's, `--help` included.
# `--max-opt=2`: V8 optimises hot code with Maglev and no further. TurboFan's code paged in, its
# work memory and the code it makes cost about 5 MiB idle and 5-14 MiB with 1,000 mappings, for
# no speed the benchmarks can tell (docs/benchmarks.md, "V8's optimising tiers"). NODE_OPTIONS
# cannot carry this flag.
ENTRYPOINT ["/nodejs/bin/node", "--max-opt=2", "--snapshot-blob", "/app/snapshot/edge-ccm.blob", "--"]
CMD ["run"]
