# The pos binary for docker-compose.yml: one image, every subcommand.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/pos ./cmd/pos

FROM debian:12-slim
# CA certificates for https endpoints (a JWKS, an OTLP collector); /data for
# the embedded NATS server when NATS_URL is not set.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data && chown nobody:nogroup /data
COPY --from=build /out/pos /usr/local/bin/pos
ENV POS_DATA_DIR=/data
USER nobody
ENTRYPOINT ["/usr/local/bin/pos"]
CMD ["serve"]
