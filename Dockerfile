# One image for every service; the command picks the service (see docker-compose.yml).
FROM node:20-bookworm-slim
WORKDIR /app
# ffmpeg: the gateway's ogg/aac/mp3/flac/opus encoders (docs/audio-formats.md).
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json .npmrc tsconfig.json ./
COPY shared shared
COPY services services
COPY tools tools
COPY infra infra
COPY voices voices
COPY vocoders vocoders
COPY bin bin
RUN npm ci --no-audit --no-fund && npm prune --omit=dev
ENV NODE_ENV=production GSV_LOG=info
CMD ["node", "dist/services/gateway/main.js"]
