# slotproxy sidecar image: build with the Swift toolchain, run on slim Debian.
#   docker build -t slotproxy .
#   docker run --rm -p 7777:7777 slotproxy --cluster redis-a:6379,redis-b:6379 --bind 0.0.0.0 \
#       --requirepass "$PROXY_PASSWORD"
# (A non-loopback bind without requirepass/users is refused: protected mode.
#  In a pod where only the app reaches it, --no-protected-mode allows it.)
FROM swift:6.1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libevent-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product slotproxy --static-swift-stdlib \
    && install -D .build/release/slotproxy /out/slotproxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libevent-2.1-7 libevent-core-2.1-7 libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home slotproxy
COPY --from=build /out/slotproxy /usr/local/bin/slotproxy
COPY config/slotproxy.yaml /etc/slotproxy/slotproxy.yaml
USER slotproxy
EXPOSE 7777
ENTRYPOINT ["/usr/local/bin/slotproxy"]
