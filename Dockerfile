# The pos binary for docker-compose.yml: one image, every subcommand.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/pos ./cmd/pos

FROM debian:12-slim
COPY --from=build /out/pos /usr/local/bin/pos
USER nobody
ENTRYPOINT ["/usr/local/bin/pos"]
CMD ["serve"]
