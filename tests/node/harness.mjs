// Starts a fresh `livebase serve` for a test file and stops it again, plus the
// small helpers every test uses: bounded waits, the HTTP auth endpoints of
// APP.md, and clients of the official `convex` npm package pointed at the
// server. Nothing here may wait without a bound.

import { before, after } from "node:test";
import { spawn } from "node:child_process";
import { mkdtemp, rm, access, readdir, readFile, writeFile } from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

import WebSocket from "ws";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { ConvexError } from "convex/values";

/** Function references by path: `api.todos.list` is `todos:list`. */
export const api = anyApi;

const HERE = path.dirname(fileURLToPath(import.meta.url));
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const LOG_TAIL_BYTES = 64 * 1024;

/** Each running server's data folder by URL, so a helper given only the URL
 * can read the server's outbox (see `verifyEmail`). */
const dataDirs = new Map();

/** The binary under test: `$LIVEBASE_BIN` (relative to this folder when not
 * absolute) or the release build of the repository. */
export function livebaseBin() {
  const configured = process.env.LIVEBASE_BIN;
  return configured
    ? path.resolve(HERE, configured)
    : path.resolve(HERE, "../../target/release/livebase");
}

/** Live children, killed if the test process exits without stopping them. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts `livebase serve --port 0 --data <fresh temp dir>` and waits (at most
 * `timeoutMs`) for its `livebase listening on <url>` line. `port` and
 * `dataDir` may be given (to restart a server where it was); a given
 * `dataDir` belongs to the caller and is not removed. `command: "dev"` starts
 * the dev server instead (with its dashboard); `args` are appended to the
 * command line, and `cwd` is the folder it runs in. `bin` replaces
 * `livebaseBin()` (a binary built by the test).
 *
 * Returns `{url, dataDir, logs(), stop()}`; `stop()` sends SIGTERM, waits for
 * the exit (bounded), asserts the exit was clean (status 0, no signal) and
 * removes the data folder it created.
 */
export async function startServer({
  timeoutMs = START_TIMEOUT_MS,
  env = {},
  port = 0,
  dataDir: givenDataDir,
  command = "serve",
  args = [],
  cwd,
  bin = livebaseBin(),
} = {}) {
  try {
    await access(bin, fsConstants.X_OK);
  } catch {
    throw new Error(
      `livebase binary not found or not executable at ${bin}; build it with ` +
        "`cargo build --release --bin livebase` or set LIVEBASE_BIN",
    );
  }
  const dataDir = givenDataDir ?? (await freshDataDir());
  const child = spawn(bin, [command, "--port", String(port), "--data", dataDir, ...args], {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1", ...env },
  });
  running.add(child);

  let log = "";
  const echo = process.env.LIVEBASE_E2E_LOGS === "1";
  const keep = (chunk) => {
    if (echo) process.stderr.write(chunk);
    log += chunk.toString("utf8");
    if (log.length > LOG_TAIL_BYTES) log = log.slice(-LOG_TAIL_BYTES);
  };
  child.stderr.on("data", keep);

  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  let exitStatus = null;
  void exited.then((s) => (exitStatus = s));

  const ready = new Promise((resolve, reject) => {
    let stdout = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(
          `livebase did not print "listening on" within ${timeoutMs} ms\n` +
            `stdout:\n${stdout}\nstderr:\n${log}`,
        ),
      );
    }, timeoutMs);
    child.stdout.on("data", (chunk) => {
      stdout += chunk.toString("utf8");
      log += chunk.toString("utf8");
      const m = /livebase listening on (http:\/\/\S+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ""));
      }
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`could not start ${bin}: ${e.message}`));
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(
        new Error(
          `livebase exited (status ${code}, signal ${signal}) before it was ready\n` +
            `stdout:\n${stdout}\nstderr:\n${log}`,
        ),
      );
    });
  });

  let url;
  try {
    url = await ready;
  } catch (e) {
    if (givenDataDir === undefined) await removeDataDir(dataDir);
    throw e;
  }

  dataDirs.set(url, dataDir);
  let stopped = null;
  async function stop() {
    if (stopped) return stopped;
    stopped = (async () => {
      try {
        if (exitStatus) {
          assert.fail(
            `livebase had already exited (status ${exitStatus.code}, signal ` +
              `${exitStatus.signal}) before stop()\n${log}`,
          );
        }
        child.kill("SIGTERM");
        let timer;
        const status = await Promise.race([
          exited,
          new Promise((resolve) => {
            timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
          }),
        ]);
        clearTimeout(timer);
        if (status === null) {
          child.kill("SIGKILL");
          await exited;
          assert.fail(`livebase did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM\n${log}`);
        }
        assert.deepEqual(
          status,
          { code: 0, signal: null },
          `livebase should exit cleanly on SIGTERM\n${log}`,
        );
      } finally {
        dataDirs.delete(url);
        if (givenDataDir === undefined) await removeDataDir(dataDir);
      }
    })();
    return stopped;
  }

  return { url, dataDir, logs: () => log, stop };
}

/** The last build of a `livebase dev` at `url`, as its dashboard shows it:
 * `{status, command, output, at}`. */
export async function devBuildStatus(url) {
  const res = await withTimeout(fetch(`${url}/_dashboard/api/build`), 10_000, "GET /api/build");
  assert.equal(res.status, 200);
  return res.json();
}

/** Polls the dashboard's build status until `status` (bounded). While the
 * server restarts on a new build, nothing answers: that is polled through. */
export async function waitForDevBuild(url, status, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    let seen;
    try {
      const build = await devBuildStatus(url);
      if (build.status === status) return build;
      seen = JSON.stringify(build);
    } catch (e) {
      seen = `no answer (${e.cause?.code ?? e.message})`;
    }
    if (Date.now() > deadline) {
      assert.fail(`the build status stayed ${seen}, not ${status}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the server's log (terminal) contains `text`. */
export async function waitForLog(server, text, ms) {
  const deadline = Date.now() + ms;
  while (!server.logs().includes(text)) {
    if (Date.now() > deadline) assert.fail(`the terminal never said ${text}:\n${server.logs()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A new empty folder for a server's data. */
/** The repository's root, where its crates are. */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The line `name = ...` of the repository's `[workspace.dependencies]`. */
export async function workspaceDependency(name) {
  const manifest = await readFile(path.join(REPO, "Cargo.toml"), "utf8");
  const m = new RegExp(`^${name} = (.*)$`, "m").exec(manifest);
  assert.ok(m, `the repository's Cargo.toml declares ${name}`);
  return `${name} = ${m[1]}`;
}

/**
 * Writes into `dir` the manifest (and lock file) of an application crate
 * whose binary `bin` is the repository's `src/main.rs` hosting `dir/functions`
 * (path dependencies on the repository's crates). Its crates keep opt-level
 * 0, as in the repository, so that cargo reuses what it built there when
 * both build into the same target folder.
 */
export async function writeHostCrate(dir, bin) {
  const ours = [
    "livebase-macros",
    "livebase-schema",
    "livebase-store",
    "livebase-store-postgres",
    "livebase-runtime",
  ];
  const deps = await Promise.all(
    ["tokio", "clap", "tracing", "tracing-subscriber", "serde_json"].map(workspaceDependency),
  );
  deps[0] = deps[0].replace("]", ', "process"]');
  await writeFile(
    path.join(dir, "Cargo.toml"),
    `[package]
name = "${bin}"
version = "0.1.0"
edition = "2021"
publish = false

# The repository's command, hosting this crate's \`functions\`.
[[bin]]
name = "${bin}"
path = "${REPO}/src/main.rs"

[dependencies]
livebase-schema = { path = "${REPO}/schema" }
livebase-runtime = { path = "${REPO}/runtime" }
livebase-store-postgres = { path = "${REPO}/store-postgres" }
livebase-functions = { path = "functions" }
${deps.join("\n")}

[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 1
${ours.map((p) => `\n[profile.dev.package.${p}]\nopt-level = 0\n`).join("")}
[workspace]
`,
  );
  // The repository's versions of every dependency.
  await writeFile(path.join(dir, "Cargo.lock"), await readFile(path.join(REPO, "Cargo.lock")));
}

export const freshDataDir = () => mkdtemp(path.join(tmpdir(), "livebase-e2e-"));
export const removeDataDir = (dir) => rm(dir, { recursive: true, force: true });

/** A TCP port that was free a moment ago (for restarting on the same URL). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// Bounded waiting

/** Rejects with a message naming `what` (a string, or a function giving one)
 * if `promise` takes longer than `ms`. */
export async function withTimeout(promise, ms, what) {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `timed out after ${ms} ms waiting for ${typeof what === "function" ? what() : what}`,
              ),
            ),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A short unique suffix so names, emails and slugs never collide. */
let counter = 0;
export function unique(prefix) {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

// ---------------------------------------------------------------------------
// The HTTP auth endpoints of APP.md

async function postJson(url, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await withTimeout(
    fetch(url, {
      method: "POST",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
    10_000,
    `POST ${url}`,
  );
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

export const auth = {
  signUp: (url, { email, password, name }) =>
    postJson(`${url}/api/auth/sign-up/email`, { email, password, name }),
  signIn: (url, { email, password }) =>
    postJson(`${url}/api/auth/sign-in/email`, { email, password }),
  signOut: (url, token) => postJson(`${url}/api/auth/sign-out`, undefined, token),
  async getSession(url, token) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const res = await withTimeout(
      fetch(`${url}/api/auth/get-session`, { headers }),
      10_000,
      "GET /api/auth/get-session",
    );
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  },
};

/** Undoes quoted-printable and base64 transfer encodings well enough to find
 * a link in an `.eml` lettre wrote. */
function decodeMail(raw) {
  const qp = raw
    .replace(/=\r?\n/g, "")
    .replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
  const b64 = [...raw.matchAll(/base64\r?\n\r?\n([A-Za-z0-9+/=\r\n]+)/g)]
    .map((m) => Buffer.from(m[1].replace(/\s/g, ""), "base64").toString("utf8"))
    .join("\n");
  return `${qp}\n${b64}`;
}

/**
 * The link containing `marker` in the newest mail to `email` in the outbox of
 * the server at `url` (started by `startServer`), waiting for the mail job.
 */
export async function outboxLink(url, email, marker, ms = 10_000) {
  const dataDir = dataDirs.get(url);
  assert.ok(dataDir, `no server started here at ${url}`);
  const outbox = path.join(dataDir, "outbox");
  const deadline = Date.now() + ms;
  for (;;) {
    const files = (await readdir(outbox).catch(() => [])).filter((f) => f.endsWith(".eml")).sort();
    for (const file of files.reverse()) {
      const raw = await readFile(path.join(outbox, file), "utf8");
      if (!raw.split(/\r?\n/).some((l) => l.toLowerCase() === `to: ${email}`.toLowerCase())) continue;
      const text = decodeMail(raw);
      const at = text.indexOf(marker);
      if (at < 0) continue;
      const start = text.lastIndexOf("http", at);
      const end = text.slice(at).search(/[\s"<]/);
      return text.slice(start, end < 0 ? undefined : at + end);
    }
    if (Date.now() > deadline) {
      assert.fail(`no mail to ${email} with a link containing ${marker} in ${outbox} within ${ms} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Verifies `email`'s address the way a person would: opens the verification
 * link mailed to it (from the server's outbox) and expects it to work.
 */
export async function verifyEmail(url, email) {
  const link = await outboxLink(url, email, "/api/auth/verify-email?");
  const res = await withTimeout(fetch(link, { redirect: "manual" }), 10_000, `GET ${link}`);
  const text = await res.text();
  assert.equal(res.status, 200, `following the verification link ${link}: ${text}`);
}

/** Signs a new user up; returns `{token, user, email, password, name}`. */
export async function newUser(url, name = "User") {
  const email = `${unique(name.toLowerCase())}@example.com`;
  const password = "correct horse battery staple";
  const res = await auth.signUp(url, { email, password, name });
  assert.equal(
    res.status,
    200,
    `sign-up of ${email} should answer 200, got ${res.status}: ${res.text}`,
  );
  assert.equal(typeof res.json?.token, "string", `sign-up reply: ${res.text}`);
  assert.equal(typeof res.json?.user?.id, "string", `sign-up reply: ${res.text}`);
  assert.equal(res.json.user.email, email);
  return { token: res.json.token, user: res.json.user, email, password, name };
}

// ---------------------------------------------------------------------------
// Clients

/** A protocol `ts` (base64 of 8 little-endian bytes) as a BigInt. */
function decodeTs(ts) {
  const bytes = Buffer.from(ts, "base64");
  assert.equal(bytes.length, 8, `a ts is 8 bytes: ${ts}`);
  return bytes.readBigUInt64LE(0);
}

/**
 * Watches every frame the server sends to one ConvexClient, over all of its
 * connections, for the rules of PROTOCOL.md the client itself does not
 * enforce: each Transition starts at the previous one's end (all zero on a
 * new connection), its ts never goes back — not even across a reconnect,
 * where the client's Connect carried its maxObservedTimestamp — and a
 * successful MutationResponse carries its commit ts. (That a Transition then
 * reaches the ts is checked by every awaited mutation: the client resolves
 * the promise only when one does.)
 */
export class ProtocolMonitor {
  constructor(label) {
    this.label = label;
    this.violations = [];
    this.frames = 0;
    this.maxTs = 0n; // highest ts seen on any connection of this client
    this.connections = 0;
  }

  #violation(message, frame) {
    this.violations.push(`${this.label}: ${message}\n  frame: ${frame.slice(0, 400)}`);
  }

  /** A `webSocketConstructor` for ConvexClient: `ws`, with every incoming frame checked. */
  constructorFor() {
    const monitor = this;
    return class MonitoredWebSocket extends WebSocket {
      constructor(...args) {
        super(...args);
        monitor.connections += 1;
        const conn = { version: null };
        this.on("message", (data, isBinary) => {
          const text = data.toString("utf8");
          if (isBinary) monitor.#violation("a binary frame (the protocol is JSON text)", text);
          else monitor.onFrame(conn, text);
        });
      }
    };
  }

  /** Checks one server frame; `conn` holds the state of its connection. */
  onFrame(conn, text) {
    try {
      this.#check(conn, text);
    } catch (e) {
      this.#violation(`a malformed frame: ${e.message}`, text);
    }
  }

  #check(conn, text) {
    this.frames += 1;
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      this.#violation("a frame that is not JSON", text);
      return;
    }
    if (msg.type === "Transition") {
      const { startVersion: start, endVersion: end } = msg;
      const expected = conn.version ?? { querySet: 0, identity: 0, ts: "AAAAAAAAAAA=" };
      if (
        start?.querySet !== expected.querySet ||
        start?.identity !== expected.identity ||
        decodeTs(start.ts) !== decodeTs(expected.ts)
      ) {
        this.#violation(
          `Transition.startVersion ${JSON.stringify(start)} is not the previous endVersion ` +
            JSON.stringify(expected),
          text,
        );
      }
      const endTs = decodeTs(end.ts);
      if (endTs < decodeTs(start.ts)) this.#violation("Transition ends before it starts", text);
      if (endTs < this.maxTs) {
        this.#violation(
          `Transition ts ${endTs} went back below ${this.maxTs} (seen earlier)`,
          text,
        );
      }
      if (endTs > this.maxTs) this.maxTs = endTs;
      conn.version = end;
    } else if (msg.type === "MutationResponse") {
      if (msg.success) {
        if (typeof msg.ts !== "string") {
          this.#violation("a successful MutationResponse without ts", text);
        } else {
          decodeTs(msg.ts);
        }
      } else if (typeof msg.result !== "string") {
        this.#violation("a failed MutationResponse whose result is not the message", text);
      }
    } else if (msg.type === "FatalError") {
      this.#violation(`FatalError from the server: ${msg.error}`, text);
    } else if (!["ActionResponse", "AuthError", "Ping"].includes(msg.type)) {
      this.#violation(`an unknown message type ${msg.type}`, text);
    }
  }

  assertClean() {
    assert.deepEqual(this.violations, [], `protocol violations seen by ${this.label}`);
  }
}

/** Tracks clients so a test can close all of them in one `after` hook. */
export class Clients {
  constructor(url) {
    this.url = url;
    this.open = [];
    this.monitors = [];
  }

  /** A WebSocket `ConvexClient` (its frames checked by a ProtocolMonitor); with
   * `token`, authenticated and confirmed by the server (the `setAuth` change
   * callback reported `true`). */
  async ws(token) {
    const monitor = new ProtocolMonitor(`ConvexClient #${this.monitors.length + 1}`);
    this.monitors.push(monitor);
    const client = new ConvexClient(this.url, {
      skipConvexDeploymentUrlCheck: true,
      unsavedChangesWarning: false,
      webSocketConstructor: monitor.constructorFor(),
    });
    client.monitor = monitor;
    this.open.push(client);
    if (token !== undefined) await authenticate(client, token);
    return client;
  }

  /** A `ConvexHttpClient`, with a bearer token when one is given. */
  http(token) {
    const client = new ConvexHttpClient(this.url, {
      skipConvexDeploymentUrlCheck: true,
    });
    if (token !== undefined) client.setAuth(token);
    return client;
  }

  /** Every frame every WebSocket client received so far obeyed the protocol. */
  assertProtocol() {
    for (const m of this.monitors) m.assertClean();
  }

  /** Closes every WebSocket client, then asserts no protocol violation was seen. */
  async closeAll() {
    const all = this.open.splice(0);
    await withTimeout(Promise.all(all.map((c) => c.close())), 10_000, "closing the convex clients");
    this.assertProtocol();
  }
}

/** `client.setAuth(async () => token)` and wait until the server accepted it. */
export async function authenticate(client, token, ms = 10_000) {
  const changes = [];
  await withTimeout(
    new Promise((resolve, reject) => {
      client.setAuth(
        async () => token,
        (isAuthenticated) => {
          changes.push(isAuthenticated);
          if (isAuthenticated) resolve();
          else reject(new Error("the server refused the auth token (onChange(false))"));
        },
      );
    }),
    ms,
    "the server to confirm the auth token",
  );
  return changes;
}

/**
 * A live `onUpdate` subscription that records every value and error in order.
 * `check(value)` runs on every value the client delivers (assertion failures
 * are kept and rethrown by `assertChecksPassed`, so none slips by).
 */
export class Live {
  constructor(client, query, args, { check } = {}) {
    this.events = [];
    this.checkFailures = [];
    this.waiters = new Set();
    this.unsubscribe = client.onUpdate(
      query,
      args,
      (value) => this.#push({ value }),
      (error) => this.#push({ error }),
    );
    this.check = check;
  }

  #push(event) {
    if (event.value !== undefined && this.check) {
      try {
        this.check(event.value);
      } catch (e) {
        this.checkFailures.push(e);
      }
    }
    this.events.push(event);
    for (const w of [...this.waiters]) w();
  }

  /** The latest event (`{value}` or `{error}`), or undefined. */
  get latest() {
    return this.events.at(-1);
  }

  /** The latest value; throws if the latest event is an error or missing. */
  get value() {
    const e = this.latest;
    if (!e) throw new Error("no update received yet");
    if (e.error) throw e.error;
    return e.value;
  }

  /** Waits until `predicate(latestEvent)` holds; bounded by `ms`. */
  waitFor(predicate, what, ms = 10_000) {
    return withTimeout(
      new Promise((resolve) => {
        const test = () => {
          const e = this.latest;
          let ok = false;
          try {
            ok = e !== undefined && predicate(e);
          } catch {
            ok = false;
          }
          if (ok) {
            this.waiters.delete(test);
            resolve(e);
          }
        };
        this.waiters.add(test);
        test();
      }),
      ms,
      () => `${what} (latest event: ${describe(this.latest)})`,
    );
  }

  /** Waits for a value satisfying `predicate(value)`. */
  async waitForValue(predicate, what, ms) {
    const e = await this.waitFor((e) => !e.error && predicate(e.value), what, ms);
    return e.value;
  }

  /** Waits for an error; returns it. */
  async waitForError(what, ms) {
    const e = await this.waitFor((e) => e.error !== undefined, what, ms);
    return e.error;
  }

  assertChecksPassed() {
    if (this.checkFailures.length > 0) throw this.checkFailures[0];
  }
}

function describe(event) {
  if (event === undefined) return "none";
  if (event.error) {
    const data = event.error instanceof ConvexError ? ` data=${safeJson(event.error.data)}` : "";
    return `error ${event.error.constructor?.name}: ${event.error.message}${data}`;
  }
  return `value ${safeJson(event.value)}`;
}

function safeJson(v) {
  try {
    const s = JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x));
    return s && s.length > 500 ? `${s.slice(0, 500)}…` : s;
  } catch {
    return String(v);
  }
}

/**
 * Asserts `error` is a `ConvexError` whose `data.code` is `code` (and whose
 * `data.message` is a string, as PROTOCOL.md's `errorData` says).
 */
export function assertCode(error, code, context = "") {
  const where = context ? ` (${context})` : "";
  assert.ok(error instanceof Error, `expected an Error${where}, got ${safeJson(error)}`);
  assert.ok(
    error instanceof ConvexError,
    `expected a ConvexError carrying errorData.code ${code}${where}, got ` +
      `${error.constructor?.name}: ${error.message}`,
  );
  assert.equal(
    error.data?.code,
    code,
    `errorData.code${where}: ${safeJson(error.data)} (message: ${error.message})`,
  );
  assert.equal(
    typeof error.data?.message,
    "string",
    `errorData.message should be a string${where}: ${safeJson(error.data)}`,
  );
}

/** Awaits `promise` (bounded) expecting a rejection with `errorData.code`. */
export async function rejectsWithCode(promise, code, context, ms = 10_000) {
  let error;
  try {
    const value = await withTimeout(promise, ms, context);
    assert.fail(`${context}: expected ${code}, but it succeeded with ${safeJson(value)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    error = e;
  }
  assertCode(error, code, context);
  return error;
}

/** Awaits `promise` (bounded) expecting any rejection; returns the error. */
export async function rejects(promise, context, ms = 10_000) {
  try {
    const value = await withTimeout(promise, ms, context);
    assert.fail(`${context}: expected an error, but it succeeded with ${safeJson(value)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    if (/^timed out after/.test(e?.message ?? "")) throw e;
    return e;
  }
}

/** Bounded `await` for a call expected to succeed. */
export const ok = (promise, context, ms = 10_000) => withTimeout(promise, ms, context);

export { ConvexError };

// ---------------------------------------------------------------------------
// Application fixtures (APP.md's functions)

/**
 * Signs up an owner and a member, makes an organization owned by the first,
 * invites the second as `member` and has them accept. Returns
 * `{owner, member, organizationId, slug}` (owner/member as `newUser` returns).
 */
export async function orgWithMember(url, clients, label = "org") {
  const owner = await newUser(url, "Owner");
  const member = await newUser(url, "Member");
  const ownerHttp = clients.http(owner.token);
  const memberHttp = clients.http(member.token);
  const slug = unique(label);
  const organizationId = await ok(
    ownerHttp.mutation(api.organizations.create, { name: `Org ${slug}`, slug }),
    "organizations:create",
  );
  assert.equal(typeof organizationId, "string", "organizations:create returns an id");
  const invitationId = await ok(
    ownerHttp.mutation(api.organizations.invite, {
      organizationId,
      email: member.email,
      role: "member",
    }),
    "organizations:invite",
  );
  // Accepting needs a verified address: the member follows the mailed link.
  await verifyEmail(url, member.email);
  await ok(
    memberHttp.mutation(api.organizations.acceptInvitation, { invitationId }),
    "organizations:acceptInvitation",
  );
  return { owner, member, organizationId, slug, invitationId };
}

/** Set to a PostgreSQL server's URL (a user who may create databases),
 * the files that use `serverForFile` run against a follower node: a writer
 * and a follower on a fresh database of that server, the tests' clients
 * all connected to the follower. */
export const FOLLOWER_ENV = "LIVEBASE_E2E_FOLLOWER_POSTGRES";

/**
 * Two nodes on a fresh database of the PostgreSQL server at `serverUrl`
 * (created with `psql`): a writer, then a follower. Returns the follower as
 * `startServer` would (its `stop()` stops both); the mails it sends are in
 * the writer's outbox, where `outboxLink` looks for them.
 */
export async function startFollower(serverUrl, options = {}) {
  const name = unique("e2e").replace(/[^a-z0-9_]/gi, "_").toLowerCase();
  await new Promise((resolve, reject) => {
    const psql = spawn("psql", [serverUrl, "-v", "ON_ERROR_STOP=1", "-qc", `CREATE DATABASE ${name}`], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    psql.stderr.on("data", (c) => (err += c));
    psql.on("error", reject);
    psql.on("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`creating database ${name}: ${err}`)),
    );
  });
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  // The follower stands where a load balancer would: the public URL both
  // nodes build upload and file URLs on.
  const port = await freePort();
  const args = [
    ...(options.args ?? []),
    "--postgres",
    url.toString(),
    "--public-url",
    `http://127.0.0.1:${port}`,
  ];
  const writer = await startServer({ ...options, args });
  let follower;
  try {
    follower = await startServer({ ...options, args, port });
  } catch (e) {
    await writer.stop();
    throw e;
  }
  dataDirs.set(follower.url, writer.dataDir);
  return {
    url: follower.url,
    dataDir: writer.dataDir,
    logs: () => `follower:\n${follower.logs()}\nwriter:\n${writer.logs()}`,
    async stop() {
      try {
        await follower.stop();
      } finally {
        await writer.stop();
      }
    },
  };
}

/**
 * A fresh server: a follower node (with its writer) when `FOLLOWER_ENV`
 * names a PostgreSQL server, else one `livebase serve`.
 */
export async function startFreshServer(options) {
  return process.env[FOLLOWER_ENV]
    ? await startFollower(process.env[FOLLOWER_ENV], options)
    : await startServer(options);
}

/**
 * One server and its clients for a whole test file: started before the
 * first test, every client closed and the server stopped after the last.
 * `use(server, clients)` is called once both exist.
 */
export function serverForFile(use, options) {
  let server;
  let clients;
  before(async () => {
    server = await startFreshServer(options);
    clients = new Clients(server.url);
    use(server, clients);
  });
  after(async () => {
    try {
      await clients?.closeAll();
    } finally {
      await server?.stop();
    }
  });
}
