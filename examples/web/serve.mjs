// Serves the web example: index.html, the `convex` package's files from
// node_modules (this folder's after `npm install convex`, else tests/node's
// after `npm ci` there), `/config.json` naming the livebase server, and
// `/api/auth/*` forwarded to that server (it sends no CORS headers).
//
//   node examples/web/serve.mjs --livebase http://127.0.0.1:3900 [--port 8080]

import { createServer } from "node:http";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODULES = [
  path.join(HERE, "node_modules"),
  path.join(HERE, "../../tests/node/node_modules"),
].find((dir) => existsSync(path.join(dir, "convex")));
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".json": "application/json" };

/** Starts the page's server on `port` (0 picks one); resolves to `{url, close()}`. */
export function serveWeb({ livebase, port = 0 }) {
  if (!MODULES) throw new Error("no node_modules with convex: run `npm ci` in tests/node");
  const server = createServer(async (req, res) => {
    try {
      const { pathname } = new URL(req.url, "http://x");
      if (pathname.startsWith("/api/auth/")) {
        const body = req.method === "POST" ? await readBody(req) : undefined;
        const upstream = await fetch(`${livebase}${pathname}`, {
          method: req.method,
          headers: { "content-type": "application/json" },
          body,
        });
        res.writeHead(upstream.status, { "content-type": "application/json" });
        res.end(await upstream.text());
      } else if (pathname === "/config.json") {
        res.writeHead(200, { "content-type": TYPES[".json"] });
        res.end(JSON.stringify({ url: livebase }));
      } else if (pathname === "/" || pathname.startsWith("/node_modules/convex/")) {
        const file =
          pathname === "/"
            ? path.join(HERE, "index.html")
            : path.join(MODULES, path.normalize(pathname.slice("/node_modules/".length)));
        if (!file.startsWith(HERE) && !file.startsWith(path.join(MODULES, "convex"))) {
          throw new Error("outside");
        }
        const content = await readFile(file);
        res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "text/plain" });
        res.end(content);
      } else {
        res.writeHead(404).end();
      }
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) =>
    server.listen(port, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        close: () => new Promise((done) => server.close(done)),
      }),
    ),
  );
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : fallback;
  };
  const { url } = await serveWeb({
    livebase: arg("--livebase", "http://127.0.0.1:3900").replace(/\/$/, ""),
    port: Number(arg("--port", "8080")),
  });
  console.log(`the todo page: ${url}`);
}
