// The harness itself, and what needs no application function: the server
// starts on a free port with a fresh data folder, answers /health, refuses a
// function that does not exist through every client path, and stops cleanly
// on SIGTERM.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  Live,
  ProtocolMonitor,
  api,
  rejects,
  withTimeout,
  serverForFile,
} from "./harness.mjs";

let server;
let clients;

serverForFile((s, c) => {
  server = s;
  clients = c;
});

test("the server prints its URL, answers /health", async () => {
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const res = await withTimeout(fetch(`${server.url}/health`), 5_000, "GET /health");
  assert.equal(res.status, 200);
});

test("another server gets its own port and data folder", async () => {
  const other = await startServer();
  try {
    assert.notEqual(other.url, server.url);
    assert.notEqual(other.dataDir, server.dataDir);
    const res = await withTimeout(fetch(`${other.url}/health`), 5_000, "GET /health");
    assert.equal(res.status, 200);
  } finally {
    await other.stop();
  }
});

// "It prints the URL it serves once it is ready, and stops cleanly on
// SIGINT/SIGTERM" (APP.md): ready includes handling the signal, so a SIGTERM
// sent the moment the line appears must still end in a clean exit.
test("SIGTERM the moment the URL is printed still stops cleanly", async () => {
  for (let i = 0; i < 5; i++) {
    const s = await startServer();
    await s.stop();
  }
});

test("a function that does not exist is an error on every path", async () => {
  const ws = await clients.ws();
  const http = clients.http();
  const missing = api.noSuchModule.noSuchFunction;
  const name = "noSuchModule:noSuchFunction";

  const live = new Live(ws, missing, {});
  const subError = await live.waitForError("the subscription to a missing query to fail");
  assert.ok(subError instanceof Error);
  assert.match(subError.message, new RegExp(name), "the message names the path");

  for (const [what, call] of [
    ["ConvexClient.query", () => ws.query(missing, {})],
    ["ConvexClient.mutation", () => ws.mutation(missing, {})],
    ["ConvexClient.action", () => ws.action(missing, {})],
    ["ConvexHttpClient.query", () => http.query(missing, {})],
    ["ConvexHttpClient.mutation", () => http.mutation(missing, {})],
    ["ConvexHttpClient.action", () => http.action(missing, {})],
  ]) {
    const e = await rejects(call(), what);
    assert.ok(e instanceof Error, `${what}: an Error`);
    assert.match(e.message, new RegExp(name), `${what}: the message names the path`);
  }

  // The connection is still usable after the failures.
  const again = await rejects(ws.query(missing, {}), "ConvexClient.query again");
  assert.match(again.message, new RegExp(name));
});

test("the protocol monitor flags what it is meant to flag", () => {
  const ts = (n) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    return b.toString("base64");
  };
  const v = (querySet, identity, n) => ({ querySet, identity, ts: ts(n) });
  const transition = (start, end) =>
    JSON.stringify({ type: "Transition", startVersion: start, endVersion: end, modifications: [] });

  const good = new ProtocolMonitor("good");
  const conn = { version: null };
  good.onFrame(conn, transition(v(0, 0, 0), v(1, 0, 5)));
  good.onFrame(
    conn,
    JSON.stringify({
      type: "MutationResponse",
      requestId: 0,
      success: true,
      result: null,
      ts: ts(7),
      logLines: [],
    }),
  );
  good.onFrame(conn, transition(v(1, 0, 5), v(1, 0, 7)));
  good.onFrame(conn, JSON.stringify({ type: "Ping" }));
  good.onFrame({ version: null }, transition(v(0, 0, 0), v(1, 1, 7))); // a reconnect
  good.assertClean();

  const gap = new ProtocolMonitor("gap");
  const c1 = { version: null };
  gap.onFrame(c1, transition(v(0, 0, 0), v(1, 0, 5)));
  gap.onFrame(c1, transition(v(2, 0, 5), v(2, 0, 6)));
  assert.throws(() => gap.assertClean(), /not the previous endVersion/);

  const back = new ProtocolMonitor("back");
  back.onFrame({ version: null }, transition(v(0, 0, 0), v(1, 0, 9)));
  back.onFrame({ version: null }, transition(v(0, 0, 0), v(1, 0, 3))); // reconnect, older ts
  assert.throws(() => back.assertClean(), /went back/);

  const bad = new ProtocolMonitor("bad");
  bad.onFrame({ version: null }, "{not json");
  bad.onFrame(
    { version: null },
    JSON.stringify({ type: "MutationResponse", success: true, result: 1 }),
  );
  bad.onFrame({ version: null }, JSON.stringify({ type: "FatalError", error: "boom" }));
  assert.equal(bad.violations.length, 3, bad.violations.join("\n"));
});
