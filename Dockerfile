# syntax=docker/dockerfile:1
# Base images are pinned by tag; pin them by digest (image@sha256:...) in a
# release pipeline that can resolve digests.
# meshd image: one static binary for both roles, the iptables init container
# (`meshd iptables apply`, run as root with NET_ADMIN and NET_RAW) and the
# sidecar (`meshd run`, uid 1337 by default).

FROM golang:1.27.3-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/meshd ./cmd/meshd

FROM debian:bookworm-slim
# iptables brings both the nft and the legacy variants; meshd picks the one
# the pod's network namespace already uses.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/meshd /usr/local/bin/meshd
USER 1337:1337
EXPOSE 15001 15006 15021
# The sidecar is healthy once /ready answers on the health port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s \
  CMD ["/usr/local/bin/meshd", "wait-ready", "--timeout", "4s"]
ENTRYPOINT ["/usr/local/bin/meshd"]
CMD ["run"]
