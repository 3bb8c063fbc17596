// Stored files through the official npm client, as Convex's docs upload
// them: `files:generateUploadUrl`, a `fetch` POST of the bytes to that URL,
// `userProfiles:setAvatar` with the `storageId`, and `avatarUrl` changing in
// a live `userProfiles:get`, then the file served back whole and in part.
// The URLs the server gives are absolute (as Convex's), so they are
// `fetch`ed as they are.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Live, api, newUser, ok, withTimeout, serverForFile } from "./harness.mjs";

let server;
let clients;

serverForFile((s, c) => {
  server = s;
  clients = c;
});

/** Uploads `bytes` as Convex's docs show, through a fresh upload URL. */
async function uploadFile(client, bytes, type) {
  const postUrl = await ok(client.mutation(api.files.generateUploadUrl, {}), "an upload URL");
  assert.ok(postUrl.startsWith(`${server.url}/api/storage/upload?token=`), postUrl);
  const result = await withTimeout(
    fetch(postUrl, {
      method: "POST",
      headers: { "Content-Type": type },
      body: bytes,
    }),
    10_000,
    "the upload",
  );
  assert.equal(result.status, 200, await result.clone().text());
  const { storageId } = await result.json();
  assert.equal(typeof storageId, "string");
  return { postUrl, storageId };
}

test("an avatar uploaded with fetch shows up live as avatarUrl and is served back", async () => {
  const ada = await newUser(server.url, "Ada");
  const client = await clients.ws(ada.token);
  await ok(client.mutation(api.userProfiles.upsert, { displayName: "Ada" }), "a profile");
  const live = new Live(client, api.userProfiles.get, {});
  await live.waitForValue((p) => p !== null && p.avatarUrl === undefined, "a profile, no avatar");

  const first = new Uint8Array(4096).map((_, i) => (i * 13) % 256);
  const { postUrl, storageId } = await uploadFile(client, first, "image/png");
  await ok(client.mutation(api.userProfiles.setAvatar, { storageId }), "setAvatar");
  const withFirst = await live.waitForValue((p) => typeof p?.avatarUrl === "string", "avatarUrl");
  const firstUrl = withFirst.avatarUrl;
  assert.ok(firstUrl.startsWith(`${server.url}/api/storage/${storageId}?sig=`), firstUrl);

  const whole = await fetch(firstUrl);
  assert.equal(whole.status, 200);
  assert.equal(whole.headers.get("content-type"), "image/png");
  assert.equal(whole.headers.get("x-content-type-options"), "nosniff");
  assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), first);
  const part = await fetch(firstUrl, { headers: { Range: "bytes=100-199" } });
  assert.equal(part.status, 206);
  assert.deepEqual(new Uint8Array(await part.arrayBuffer()), first.slice(100, 200));

  // The same upload URL again: refused.
  const replay = await fetch(postUrl, { method: "POST", body: first });
  assert.equal(replay.status, 403);

  // A second avatar replaces the first, live; the first file is gone.
  const second = new TextEncoder().encode("a second picture");
  const { storageId: secondId } = await uploadFile(client, second, "image/webp");
  await ok(client.mutation(api.userProfiles.setAvatar, { storageId: secondId }), "setAvatar again");
  const withSecond = await live.waitForValue(
    (p) => typeof p?.avatarUrl === "string" && p.avatarUrl !== firstUrl,
    "the new avatarUrl",
  );
  assert.ok(withSecond.avatarUrl.includes(secondId), withSecond.avatarUrl);
  assert.equal((await fetch(firstUrl)).status, 404);
  const served = await fetch(withSecond.avatarUrl);
  assert.equal(served.headers.get("content-type"), "image/webp");
  assert.equal(await served.text(), "a second picture");
  live.unsubscribe();
});
