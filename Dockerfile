# The operator's container image: one static binary, the CA bundle, nothing else (no shell), run
# as uid 65532. `docker build -t ecs-image-operator .` builds it; `make image` builds the same
# runtime stage with buildah from a host build of the same static binary (no Docker needed).

FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# A static glibc binary; the explicit --target keeps build scripts and proc-macros dynamic.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && mkdir -p /out \
 && cp target/x86_64-unknown-linux-gnu/release/ecs-image-operator /out/ \
 && cp /etc/ssl/certs/ca-certificates.crt /out/

# runtime
FROM scratch
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ecs-image-operator /ecs-image-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/ecs-image-operator"]
CMD ["run"]
