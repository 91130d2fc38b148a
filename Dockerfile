# memzone: memzone-proxy and memzone-controller in one image.
#
# Build stage: the same scripts CI runs (install the build packages, build the release).
# Only the install script is copied before the package install, so that layer is reused until
# it changes; the sources come after it.
FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN ./scripts/install-deps.sh build
COPY CMakeLists.txt ./
COPY proto/ proto/
COPY proxy/ proxy/
COPY controlplane/ controlplane/
COPY bench/ bench/
# ccache in a build cache mount: after a source change, only what changed is compiled again.
ENV CCACHE_DIR=/ccache
RUN --mount=type=cache,target=/ccache \
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEMZONE_TESTS=OFF \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
 && cmake --build build -j"$(nproc)" --target memzone-proxy memzone-controller \
 && strip --strip-debug build/proxy/memzone-proxy build/controlplane/memzone-controller

# Runtime stage: the binaries and exactly the shared libraries they load
# (scripts/runtime-packages.sh lists them; tests/packaging checks this list against it).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      libabsl20220623 libbrotli1 libc-ares2 libc6 libcom-err2 libcurl4 \
      libevent-core-2.1-7 libevent-pthreads-2.1-7 libffi8 libgcc-s1 libgmp10 libgnutls30 \
      libgrpc++1.51 libgrpc29 libgssapi-krb5-2 libhogweed6 libidn2-0 libk5crypto3 \
      libkeyutils1 libkrb5-3 libkrb5support0 libldap-2.5-0 libnettle8 libnghttp2-14 \
      libp11-kit0 libprometheus-cpp-core1.0 libprotobuf32 libpsl5 libre2-9 librtmp1 \
      libsasl2-2 libssh2-1 libssl3 libstdc++6 libtasn1-6 libunistring2 libyaml-cpp0.7 \
      libzstd1 zlib1g \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old \
 && groupadd --system --gid 10001 memzone \
 && useradd --system --no-log-init --uid 10001 --gid memzone --no-create-home --shell /usr/sbin/nologin memzone \
 && mkdir -p /var/lib/memzone && chown memzone:memzone /var/lib/memzone
COPY --from=build /src/build/proxy/memzone-proxy /usr/local/bin/memzone-proxy
COPY --from=build /src/build/controlplane/memzone-controller /usr/local/bin/memzone-controller
USER 10001:10001
# memcached clients, the topology stream (controller), metrics (proxy, controller)
EXPOSE 11211 18000 9100 9101
ENTRYPOINT []
CMD ["memzone-proxy", "--help"]
