#!/usr/bin/env node
// Entry point of `npx gsv`: the compiled CLI (built by `npm ci`/`npm run build`).
await import("../dist/tools/cli.js");
