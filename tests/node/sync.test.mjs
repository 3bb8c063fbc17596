// Issue 3 through the official npm client: a subscription sees another
// client's mutation; a mutation's promise resolves only once the caller's own
// subscription reflects it, also when several are called at once (they
// commit in call order); errors arrive with errorData (UNAUTHENTICATED,
// FORBIDDEN, NOT_FOUND, INVALID_ARGUMENT); a missing or internal function is
// an error; ConvexHttpClient queries, mutations and errors.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  Live,
  api,
  newUser,
  orgWithMember,
  unique,
  ok,
  rejects,
  rejectsWithCode,
  assertCode,
  ConvexError,
  serverForFile,
} from "./harness.mjs";

let server;
let clients;

serverForFile((s, c) => {
  server = s;
  clients = c;
});

const ids = (todos) => todos.map((t) => t._id);

/** Every value a todos:list subscription delivers is an array of todos of `organizationId`. */
const todosOf = (organizationId) => (value) => {
  assert.ok(Array.isArray(value), `todos:list returns an array, got ${JSON.stringify(value)}`);
  for (const t of value) {
    assert.equal(
      t.organizationId,
      organizationId,
      `a row of another organization: ${JSON.stringify(t)}`,
    );
  }
};

test("a subscription sees a mutation made by another client", async () => {
  const { owner, member, organizationId } = await orgWithMember(server.url, clients, "push");
  const a = await clients.ws(owner.token);
  const b = await clients.ws(member.token);

  const live = new Live(a, api.todos.list, { organizationId }, { check: todosOf(organizationId) });
  await live.waitForValue((v) => v.length === 0, "the empty initial todo list");

  const text = unique("from b");
  const id = await ok(
    b.mutation(api.todos.create, { organizationId, text }),
    "todos:create from B",
  );
  assert.equal(typeof id, "string");

  const value = await live.waitForValue(
    (v) => ids(v).includes(id),
    "client A's subscription to show the todo client B created",
  );
  const todo = value.find((t) => t._id === id);
  assert.equal(todo.text, text);
  assert.equal(todo.completed, false);
  assert.equal(todo.organizationId, organizationId);
  assert.equal(todo.createdBy, member.user.id, "createdBy is the user id sign-up returned");
  assert.equal(typeof todo._creationTime, "number");

  // And the other direction, with an update rather than an insert.
  const liveB = new Live(b, api.todos.list, { organizationId }, { check: todosOf(organizationId) });
  await liveB.waitForValue((v) => ids(v).includes(id), "client B's own list");
  await ok(a.mutation(api.todos.toggle, { id }), "todos:toggle from A");
  await liveB.waitForValue(
    (v) => v.find((t) => t._id === id)?.completed === true,
    "client B's subscription to show A's toggle",
  );

  live.assertChecksPassed();
  liveB.assertChecksPassed();
  assert.ok(a.monitor.frames > 0 && b.monitor.frames > 0, "the protocol monitors saw the frames");
  clients.assertProtocol();
  live.unsubscribe();
  liveB.unsubscribe();
});

test("a mutation's promise resolves only after the caller's subscription reflects it", async () => {
  const { owner, organizationId } = await orgWithMember(server.url, clients, "ryw");
  const a = await clients.ws(owner.token);
  // A second, busy writer on another connection, so the server has other
  // commits to interleave with A's.
  const other = await clients.ws(owner.token);

  const live = new Live(a, api.todos.list, { organizationId }, { check: todosOf(organizationId) });
  await live.waitForValue((v) => Array.isArray(v), "the initial todo list");

  const created = [];
  for (let i = 0; i < 8; i++) {
    const noise = other.mutation(api.todos.create, { organizationId, text: unique("noise") });
    const text = unique(`mine ${i}`);
    const id = await ok(
      a.mutation(api.todos.create, { organizationId, text }),
      `todos:create #${i}`,
    );
    // No waiting: at the moment the promise resolved, the latest value the
    // subscription delivered must already hold the new todo.
    const latest = live.latest;
    assert.ok(latest && !latest.error, `the subscription has a value when create #${i} resolves`);
    const row = latest.value.find((t) => t._id === id);
    assert.ok(row, `create #${i} resolved before its subscription showed todo ${id}`);
    assert.equal(row.text, text);
    created.push(id);
    await ok(noise, `noise create #${i}`);
  }

  // Newest first: A's own todos appear in reverse creation order.
  const mineInOrder = ids(live.value).filter((id) => created.includes(id));
  assert.deepEqual(mineInOrder, [...created].reverse(), "todos:list is newest first");

  const target = created[3];
  await ok(a.mutation(api.todos.toggle, { id: target }), "todos:toggle");
  assert.equal(
    live.value.find((t) => t._id === target)?.completed,
    true,
    "toggle resolved before its subscription showed completed: true",
  );
  await ok(a.mutation(api.todos.toggle, { id: target }), "todos:toggle back");
  assert.equal(live.value.find((t) => t._id === target)?.completed, false);

  await ok(a.mutation(api.todos.remove, { id: target }), "todos:remove");
  assert.ok(
    !ids(live.value).includes(target),
    "remove resolved before its subscription dropped the todo",
  );

  // A mutation that changes nothing this query reads still resolves (the
  // server must send a Transition reaching its ts even with no modification).
  const profileId = await ok(
    a.mutation(api.userProfiles.upsert, { displayName: "Owner" }),
    "userProfiles:upsert (touches no subscribed query)",
  );
  assert.equal(typeof profileId, "string");

  live.assertChecksPassed();
  live.unsubscribe();
});

test("mutations called at once commit in call order, and each resolves once its subscription shows it", async () => {
  const { owner, organizationId } = await orgWithMember(server.url, clients, "burst");
  const a = await clients.ws(owner.token);
  const live = new Live(a, api.todos.list, { organizationId }, { check: todosOf(organizationId) });
  await live.waitForValue((v) => Array.isArray(v), "the initial todo list");

  // The client sends every call at once, without waiting for answers; the
  // server runs them in the order sent. Every seventh fails (blank text),
  // on its own.
  const calls = [];
  for (let i = 0; i < 40; i++) {
    const text = i % 7 === 3 ? "   " : unique(`burst ${i}`);
    const call = a.mutation(api.todos.create, { organizationId, text }).then(
      (id) => {
        // At the moment it resolves, the subscription already holds it.
        const latest = live.latest;
        assert.ok(latest && !latest.error, `a value when create #${i} resolved`);
        assert.ok(
          latest.value.some((t) => t._id === id),
          `create #${i} resolved before its subscription showed todo ${id}`,
        );
        return { i, id };
      },
      (error) => ({ i, error }),
    );
    calls.push(call);
  }
  const outcomes = await Promise.all(calls);
  const created = [];
  for (const { i, id, error } of outcomes) {
    if (i % 7 === 3) {
      assert.ok(error, `create #${i} with a blank text should fail`);
      assertCode(error, "INVALID_ARGUMENT");
    } else {
      assert.equal(error, undefined, `create #${i} failed: ${error}`);
      created.push(id);
    }
  }
  // Newest first: reverse call order means they committed in call order.
  const mine = ids(live.value).filter((id) => created.includes(id));
  assert.deepEqual(mine, [...created].reverse(), "committed in the order called");

  live.assertChecksPassed();
  live.unsubscribe();
});

test("errors carry errorData: not signed in → UNAUTHENTICATED", async () => {
  const { organizationId } = await orgWithMember(server.url, clients, "unauth");
  const anon = await clients.ws();

  const live = new Live(anon, api.todos.list, { organizationId });
  const error = await live.waitForError("todos:list without auth to fail");
  assertCode(error, "UNAUTHENTICATED", "todos:list subscription without auth");

  await rejectsWithCode(
    anon.query(api.todos.list, { organizationId }),
    "UNAUTHENTICATED",
    "one-shot todos:list without auth",
  );
  await rejectsWithCode(
    anon.mutation(api.todos.create, { organizationId, text: "nope" }),
    "UNAUTHENTICATED",
    "todos:create without auth",
  );
  await rejectsWithCode(
    anon.mutation(api.organizations.create, { name: "x", slug: unique("x") }),
    "UNAUTHENTICATED",
    "organizations:create without auth",
  );
  // userProfiles:get is `ensure_user`: signed in, no organization involved.
  await rejectsWithCode(
    anon.query(api.userProfiles.get, {}),
    "UNAUTHENTICATED",
    "userProfiles:get without auth",
  );
  live.unsubscribe();
});

test("errors carry errorData: missing permission → FORBIDDEN, foreign document → NOT_FOUND", async () => {
  const { owner, member, organizationId } = await orgWithMember(server.url, clients, "perm");
  const ownerWs = await clients.ws(owner.token);
  const memberWs = await clients.ws(member.token);

  const live = new Live(
    ownerWs,
    api.todos.list,
    { organizationId },
    { check: todosOf(organizationId) },
  );
  const id = await ok(
    ownerWs.mutation(api.todos.create, { organizationId, text: unique("keep") }),
    "todos:create",
  );
  assert.ok(ids(live.value).includes(id));

  // A member may create and update todos but not delete them.
  const err = await rejectsWithCode(
    memberWs.mutation(api.todos.remove, { id }),
    "FORBIDDEN",
    "member todos:remove",
  );
  assert.ok(err instanceof ConvexError);
  await ok(memberWs.mutation(api.todos.toggle, { id }), "member todos:toggle (allowed)");
  await live.waitForValue(
    (v) => v.find((t) => t._id === id)?.completed === true,
    "the member's toggle",
  );
  assert.ok(ids(live.value).includes(id), "the forbidden remove removed nothing");
  // A member cannot invite.
  await rejectsWithCode(
    memberWs.mutation(api.organizations.invite, {
      organizationId,
      email: `${unique("x")}@example.com`,
      role: "member",
    }),
    "FORBIDDEN",
    "member organizations:invite",
  );

  // A signed-in user outside the organization.
  const outsider = await newUser(server.url, "Outsider");
  const outsiderWs = await clients.ws(outsider.token);
  const outsiderLive = new Live(outsiderWs, api.todos.list, { organizationId });
  assertCode(
    await outsiderLive.waitForError("todos:list by a non-member to fail"),
    "FORBIDDEN",
    "todos:list by a non-member",
  );
  await rejectsWithCode(
    outsiderWs.mutation(api.todos.create, { organizationId, text: "intruder" }),
    "FORBIDDEN",
    "todos:create by a non-member",
  );
  // A document of another organization is never shown: NOT_FOUND by id.
  await rejectsWithCode(
    outsiderWs.mutation(api.todos.toggle, { id }),
    "NOT_FOUND",
    "todos:toggle of a foreign todo",
  );
  await rejectsWithCode(
    outsiderWs.mutation(api.todos.remove, { id }),
    "NOT_FOUND",
    "todos:remove of a foreign todo",
  );
  assert.ok(ids(live.value).includes(id));

  live.assertChecksPassed();
  live.unsubscribe();
  outsiderLive.unsubscribe();
});

test("a missing or internal function is an error, and the two look the same", async () => {
  const { owner } = await orgWithMember(server.url, clients, "internal");
  const ws = await clients.ws(owner.token);
  const http = clients.http(owner.token);
  const normalize = (e, path) => ({
    type: e.constructor.name,
    message: e.message.replaceAll(path, "<path>"),
    data: e instanceof ConvexError ? JSON.stringify(e.data).replaceAll(path, "<path>") : undefined,
  });

  const args = { to: "someone@example.com", template: "welcome", data: {} };
  for (const [what, call] of [
    ["ConvexClient.action", (ref) => ws.action(ref, args)],
    ["ConvexHttpClient.action", (ref) => http.action(ref, args)],
  ]) {
    const internal = await rejects(call(api.emails.send), `${what} emails:send (internal)`);
    const missing = await rejects(call(api.emails.sendNope), `${what} emails:sendNope (missing)`);
    assert.deepEqual(
      normalize(internal, "emails:send"),
      normalize(missing, "emails:sendNope"),
      `${what}: calling an internal function must look exactly like calling a missing one`,
    );
  }
  // A public function called as the wrong kind is not found either.
  const wrongKind = await rejects(
    ws.mutation(api.todos.list, { organizationId: "x" }),
    "todos:list as a mutation",
  );
  assert.ok(wrongKind instanceof Error);
});

test("ConvexHttpClient: query and mutation work, errors carry data", async () => {
  const { owner, member, organizationId } = await orgWithMember(server.url, clients, "http");
  const http = clients.http(owner.token);
  const memberHttp = clients.http(member.token);
  const anon = clients.http();

  // A WebSocket subscriber sees what the HTTP client writes.
  const ws = await clients.ws(owner.token);
  const live = new Live(ws, api.todos.list, { organizationId }, { check: todosOf(organizationId) });
  await live.waitForValue((v) => Array.isArray(v), "the initial list");

  const text = unique("over http");
  const id = await ok(
    http.mutation(api.todos.create, { organizationId, text }),
    "http todos:create",
  );
  assert.equal(typeof id, "string");
  const list = await ok(http.query(api.todos.list, { organizationId }), "http todos:list");
  assert.ok(Array.isArray(list));
  assert.equal(list.find((t) => t._id === id)?.text, text, "the HTTP query reads the HTTP write");
  await live.waitForValue(
    (v) => ids(v).includes(id),
    "the WebSocket subscription to show the HTTP write",
  );

  // userProfiles:upsert returns the same id on every call for one user.
  const p1 = await ok(http.mutation(api.userProfiles.upsert, { displayName: "First" }), "upsert 1");
  const p2 = await ok(
    http.mutation(api.userProfiles.upsert, { displayName: "Second", bio: "b" }),
    "upsert 2",
  );
  assert.equal(p1, p2, "userProfiles:upsert keeps one profile per user");
  const profile = await ok(http.query(api.userProfiles.get, {}), "userProfiles:get");
  assert.equal(profile?.displayName, "Second");
  assert.equal(
    await ok(memberHttp.query(api.userProfiles.get, {}), "member userProfiles:get"),
    null,
  );

  await rejectsWithCode(
    anon.query(api.todos.list, { organizationId }),
    "UNAUTHENTICATED",
    "http todos:list without auth",
  );
  await rejectsWithCode(
    anon.mutation(api.todos.create, { organizationId, text: "x" }),
    "UNAUTHENTICATED",
    "http todos:create without auth",
  );
  await rejectsWithCode(
    memberHttp.mutation(api.todos.remove, { id }),
    "FORBIDDEN",
    "http member todos:remove",
  );
  await rejectsWithCode(
    http.query(api.todos.list, {}),
    "INVALID_ARGUMENT",
    "http todos:list without organizationId",
  );
  await rejectsWithCode(
    http.mutation(api.todos.create, { organizationId, text: 42 }),
    "INVALID_ARGUMENT",
    "http todos:create with a number for text",
  );

  // A forged token (the signature of another valid token) is refused.
  const [h, p] = owner.token.split(".");
  const forged = `${h}.${p}.${member.token.split(".")[2]}`;
  await rejectsWithCode(
    clients.http(forged).query(api.todos.list, { organizationId }),
    "UNAUTHENTICATED",
    "http todos:list with a forged token",
  );

  const missing = await rejects(http.query(api.todos.noSuchQuery, {}), "http missing query");
  assert.match(missing.message, /todos:noSuchQuery/);

  live.assertChecksPassed();
  live.unsubscribe();
});
