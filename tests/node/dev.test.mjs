// `livebase dev` rebuilds and restarts on save, seen by the official client:
// a ConvexClient holding a live query gets the new build's result with
// nothing done on its side (it reconnects to the new server on the same port,
// sends its query set again and gets the result).
//
// This test builds nothing: the build command is a script and the binary it
// "produces" a wrapper that runs the livebase under test with another public
// URL, which changes a stored file's `avatarUrl`. `dev-cargo.test.mjs` is
// the same loop with cargo and a real application.

import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

import {
  startServer,
  livebaseBin,
  Clients,
  Live,
  api,
  newUser,
  ok,
  unique,
  devBuildStatus,
  waitForLog,
} from "./harness.mjs";

const RELOADED = "http://reloaded.example";

/** A shell script that runs `bin` with `env` (`NAME=value ` or ""). */
const wrapper = (bin, env = "") => `#!/bin/sh\n${env}exec '${bin}' "$@"\n`;

test("a save reaches a ConvexClient's live query through the rebuild and restart", async () => {
  const project = await mkdtemp(path.join(tmpdir(), "livebase-dev-"));
  let server;
  let clients;
  try {
    await mkdir(path.join(project, "src"));
    await writeFile(path.join(project, "src", "app.rs"), "// version 1\n");
    await writeFile(path.join(project, "app"), wrapper(livebaseBin()));
    await chmod(path.join(project, "app"), 0o755);
    const next = wrapper(livebaseBin(), `LIVEBASE_PUBLIC_URL=${RELOADED} `);
    await writeFile(
      path.join(project, "build.sh"),
      `echo compiling >&2\ncat > app <<'EOF'\n${next}EOF\n`,
    );
    server = await startServer({
      command: "dev",
      cwd: project,
      args: ["--watch", "src", "--build-cmd", "sh build.sh", "--bin", "app"],
      env: { LIVEBASE_PUBLIC_URL: undefined, LIVEBASE_BUILD: undefined, LIVEBASE_DEV_BIN: undefined },
    });
    clients = new Clients(server.url);
    const ada = await newUser(server.url, "Ada");
    const client = await clients.ws(ada.token);
    await ok(client.mutation(api.userProfiles.upsert, { displayName: "Ada" }), "a profile");
    const postUrl = await ok(client.mutation(api.files.generateUploadUrl, {}), "an upload URL");
    const uploaded = await fetch(postUrl, {
      method: "POST",
      headers: { "Content-Type": "image/png" },
      body: new Uint8Array([1, 2, 3]),
    });
    assert.equal(uploaded.status, 200);
    const { storageId } = await uploaded.json();
    await ok(client.mutation(api.userProfiles.setAvatar, { storageId }), "setAvatar");
    const live = new Live(client, api.userProfiles.get, {});
    await live.waitForValue(
      (p) => p?.avatarUrl?.startsWith(`${server.url}/api/storage/`),
      "the avatar on the first build's URL",
    );

    const organizationId = await ok(
      client.mutation(api.organizations.create, { name: "Dev", slug: unique("dev") }),
      "organizations:create",
    );
    const todos = new Live(client, api.todos.list, { organizationId });
    await todos.waitForValue((list) => list.length === 0, "no todos yet");

    await writeFile(path.join(project, "src", "app.rs"), "// version 2\n");
    // A mutation sent while the build runs and the servers swap: the old
    // server answers it, or the client resends it to the new one (which
    // answers a resend of a committed one from its stored outcome); either
    // way it is applied once.
    await waitForLog(server, "changed; rebuilding", 10_000);
    const around = client.mutation(api.todos.create, { organizationId, text: "around the restart" });
    const reloaded = await live.waitForValue(
      (p) => p?.avatarUrl?.startsWith(`${RELOADED}/api/storage/${storageId}`),
      "the new build's avatarUrl, with no action on the client's side",
      30_000,
    );
    assert.equal(reloaded.displayName, "Ada");
    const todoId = await ok(around, "the mutation sent around the restart", 30_000);
    const list = await todos.waitForValue(
      (l) => l.some((t) => t._id === todoId),
      "the todo sent around the restart",
    );
    assert.deepEqual(
      list.map((t) => t.text),
      ["around the restart"],
      "applied exactly once",
    );
    assert.ok(client.monitor.connections >= 2, "the client reconnected to the new server");
    assert.equal((await devBuildStatus(server.url)).status, "ok");
    await waitForLog(server, "compiling", 1_000);
    // The session and the data are the same: a mutation on the new server.
    await ok(client.mutation(api.userProfiles.upsert, { displayName: "Ada L." }), "rename");
    await live.waitForValue((p) => p?.displayName === "Ada L.", "the rename");
    live.unsubscribe();
    todos.unsubscribe();
  } finally {
    try {
      await clients?.closeAll();
      await server?.stop();
    } finally {
      await rm(project, { recursive: true, force: true });
    }
  }
});
