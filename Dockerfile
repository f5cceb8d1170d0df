# slotproxy sidecar image: build with the Swift toolchain, run on slim Debian.
#   docker build -t slotproxy .
#   docker run --rm -p 7777:7777 -e SLOTPROXY_CLUSTER=redis-a:6379,redis-b:6379 \
#       -e SLOTPROXY_BIND=0.0.0.0 -e SLOTPROXY_REQUIREPASS="$PROXY_PASSWORD" slotproxy
# Every setting can come from the environment (SLOTPROXY_<NAME>, the config
# file's name in upper case with '_' for '-'), from a mounted file
# (-v ./slotproxy.yaml:/etc/slotproxy/slotproxy.yaml, then pass
# --config /etc/slotproxy/slotproxy.yaml), or from flags after the image name.
# A non-loopback bind without requirepass/users is refused (protected mode);
# in a pod where only the app reaches it, bind 127.0.0.1 (the default).
FROM swift:6.3-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libevent-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product slotproxy --static-swift-stdlib \
    && install -D .build/release/slotproxy /out/slotproxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libevent-2.1-7 libevent-core-2.1-7 libevent-extra-2.1-7 libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10001 slotproxy
COPY --from=build /out/slotproxy /usr/local/bin/slotproxy
COPY config/slotproxy.yaml /etc/slotproxy/slotproxy.example.yaml
USER 10001
# The admin endpoint (/metrics, /healthz, /readyz) is on in the image; bind it
# to the pod's address (SLOTPROXY_ADMIN_BIND=0.0.0.0) for probes and scrapes
# from outside the container. Environment variables win over a mounted
# config file: change the port here (docker run -e SLOTPROXY_ADMIN_PORT=...),
# not with admin-port in the file; the HEALTHCHECK follows the variable.
ENV SLOTPROXY_ADMIN_PORT=9121
EXPOSE 7777 9121
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/${SLOTPROXY_ADMIN_PORT} && printf "GET /healthz HTTP/1.0\r\n\r\n" >&3 && head -n 1 <&3 | grep -q " 200 "'
# SIGTERM (docker stop, pod deletion) drains clients within shutdown-timeout.
# docker stop kills after 10 s by default: the drain gets 8, so it ends
# first (raise both together: docker stop -t, terminationGracePeriodSeconds).
ENV SLOTPROXY_SHUTDOWN_TIMEOUT=8
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/slotproxy"]
