# faiss-proxy server image. Debian ships FAISS as a static library (libfaiss.a),
# so the runtime stage needs only BLAS/LAPACK, OpenMP, ZeroMQ, msgpack-c,
# libsodium, libmicrohttpd (metrics), libnats (the cluster), jansson (the CLI),
# and nats-server, so that one image runs both processes of a cluster
# (deploy/compose.yml). tests/integration/test_deploy.py checks these lists
# against what CMake and the binaries need.
#   docker build -t faiss-proxy .
#   docker run -p 5555:5555 -v "$PWD/data:/app/data" faiss-proxy
FROM debian:bookworm-slim AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config libfaiss-dev libopenblas-dev libzmq3-dev \
        libmsgpack-dev libsodium-dev libmicrohttpd-dev libnats-dev libjansson-dev zlib1g-dev && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && \
    cmake --build build -j"$(nproc)" --target faiss-proxy-server faiss-proxy-test-client \
        faiss-proxy faissproxy

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libopenblas0 liblapack3 libgomp1 libzmq5 libmsgpackc2 libsodium23 libmicrohttpd12 \
        libnats3.4 libjansson4 zlib1g nats-server tini && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/faiss-proxy-server /src/build/faiss-proxy-test-client \
     /src/build/faiss-proxy /usr/local/bin/
COPY --from=build /src/build/libfaissproxy.so* /usr/local/lib/
RUN ldconfig && useradd --system --home /app faissproxy && mkdir -p /app/data /var/lib/nats && \
    chown faissproxy /app/data /var/lib/nats
USER faissproxy
WORKDIR /app
ENV FAISS_BIND_ADDRESS=0.0.0.0 FAISS_PORT=5555 FAISS_DATA_DIR=/app/data
EXPOSE 5555
VOLUME /app/data /var/lib/nats
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["faiss-proxy-server"]
