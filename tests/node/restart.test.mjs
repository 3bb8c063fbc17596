// The Resume rule of PROTOCOL.md with the official client: the server stops
// and starts again on the same port and data folder; the ConvexClient
// reconnects on its own, re-authenticates with the same token (sessions and the
// signing key live in the data folder), re-adds its subscription and sends the
// mutation queued while the server was down, which runs exactly once.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  freePort,
  freshDataDir,
  removeDataDir,
  Clients,
  Live,
  api,
  newUser,
  unique,
  ok,
} from "./harness.mjs";

test("a ConvexClient rides through a server restart", async () => {
  const dataDir = await freshDataDir();
  const port = await freePort();
  let server = await startServer({ port, dataDir });
  const clients = new Clients(server.url);
  try {
    const owner = await newUser(server.url, "Owner");
    const a = await clients.ws(owner.token);
    const organizationId = await ok(
      a.mutation(api.organizations.create, { name: "Restart", slug: unique("restart") }),
      "organizations:create",
    );
    const live = new Live(a, api.todos.list, { organizationId });
    await ok(a.mutation(api.todos.create, { organizationId, text: "before" }), "todos:create");
    assert.deepEqual(
      live.value.map((t) => t.text),
      ["before"],
    );

    await server.stop();
    const queued = a.mutation(api.todos.create, { organizationId, text: "while down" });
    server = await startServer({ port, dataDir });
    assert.equal(server.url, clients.url, "the same URL after the restart");

    const id = await ok(queued, "the mutation queued while the server was down", 60_000);
    assert.equal(typeof id, "string");
    const value = await live.waitForValue(
      (v) => v.some((t) => t._id === id),
      "the subscription to resume and show the queued todo",
      60_000,
    );
    assert.deepEqual(
      value.map((t) => t.text),
      ["while down", "before"],
      "each todo exactly once, newest first",
    );
    // The token issued before the restart still works over HTTP too.
    const list = await ok(
      clients.http(owner.token).query(api.todos.list, { organizationId }),
      "HTTP todos:list with the pre-restart token",
    );
    assert.equal(list.length, 2);
    assert.ok(a.monitor.connections >= 2, "the client reconnected on a new WebSocket");
    assert.ok(a.monitor.frames > 0);
    live.unsubscribe();
  } finally {
    try {
      await clients.closeAll();
      await server.stop();
    } finally {
      await removeDataDir(dataDir);
    }
  }
});
