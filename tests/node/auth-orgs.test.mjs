// Issue 4 through the official npm client: users signed up over the HTTP auth
// endpoints, `setAuth` tokens, two organizations, an invitation accepted, live
// lists that never show the other organization's rows, membership changes
// reaching live subscriptions, and sign-out ending a live subscription.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  Live,
  api,
  auth,
  authenticate,
  newUser,
  unique,
  ok,
  rejects,
  rejectsWithCode,
  assertCode,
  verifyEmail,
  serverForFile,
} from "./harness.mjs";

let server;
let clients;

serverForFile((s, c) => {
  server = s;
  clients = c;
});

test("the HTTP auth endpoints: sign-up, sign-in, get-session", async () => {
  const url = server.url;
  const email = `${unique("dana")}@example.com`;
  const password = "a long enough password";

  const up = await auth.signUp(url, { email, password, name: "Dana" });
  assert.equal(up.status, 200, up.text);
  assert.deepEqual(Object.keys(up.json.user).sort(), ["email", "emailVerified", "id", "name"]);
  assert.equal(up.json.user.emailVerified, false, "verified only once the mailed link is followed");
  assert.equal(up.json.user.email, email);
  assert.equal(up.json.user.name, "Dana");
  // A JWT with sub = user id, sid, iat, exp (the npm client schedules its
  // refresh from iat/exp).
  const claims = JSON.parse(Buffer.from(up.json.token.split(".")[1], "base64url").toString());
  assert.equal(claims.sub, up.json.user.id);
  assert.equal(typeof claims.sid, "string");
  assert.equal(typeof claims.iat, "number");
  assert.ok(claims.exp > claims.iat);

  assert.equal(
    (await auth.signUp(url, { email, password, name: "Again" })).status,
    422,
    "email already used",
  );
  assert.equal(
    (
      await auth.signUp(url, {
        email: `${unique("short")}@example.com`,
        password: "1234567",
        name: "S",
      })
    ).status,
    400,
    "password shorter than 8",
  );
  assert.equal(
    (await auth.signUp(url, { email: "not-an-email", password, name: "N" })).status,
    400,
    "bad email",
  );

  const inn = await auth.signIn(url, { email, password });
  assert.equal(inn.status, 200, inn.text);
  assert.equal(inn.json.user.id, up.json.user.id);
  assert.notEqual(inn.json.token, up.json.token, "a new session, a new token");

  const wrongPassword = await auth.signIn(url, { email, password: "not the password" });
  const unknownEmail = await auth.signIn(url, {
    email: `${unique("nobody")}@example.com`,
    password,
  });
  assert.equal(wrongPassword.status, 401);
  assert.equal(unknownEmail.status, 401);
  assert.equal(
    wrongPassword.text,
    unknownEmail.text,
    "one message whether the email or the password was wrong",
  );

  const session = await auth.getSession(url, inn.json.token);
  assert.equal(session.status, 200, session.text);
  assert.equal(session.json.user.id, up.json.user.id);
  assert.ok(session.json.session, "get-session returns the session");
  assert.equal((await auth.getSession(url)).status, 401, "no token");
  assert.equal((await auth.getSession(url, "not.a.jwt")).status, 401, "garbage token");
});

/** A check run on every value a todos:list subscription delivers. */
const onlyOrg = (organizationId, tag) => (value) => {
  assert.ok(Array.isArray(value), `todos:list returns an array, got ${JSON.stringify(value)}`);
  for (const t of value) {
    assert.equal(
      t.organizationId,
      organizationId,
      `a row of another organization leaked: ${JSON.stringify(t)}`,
    );
    assert.ok(t.text.startsWith(tag), `a row of another organization leaked: ${JSON.stringify(t)}`);
  }
};

const texts = (v) => v.map((t) => t.text).sort();

test("two users, two organizations, an invitation accepted, live lists stay in their organization", async () => {
  const alice = await newUser(server.url, "Alice");
  const bob = await newUser(server.url, "Bob");
  const a = await clients.ws(alice.token);
  const b = await clients.ws(bob.token);

  // Two organizations, one each.
  const slugA = unique("acme");
  const slugB = unique("bobco");
  const orgA = await ok(
    a.mutation(api.organizations.create, { name: "Acme", slug: slugA }),
    "alice creates Acme",
  );
  const orgB = await ok(
    b.mutation(api.organizations.create, { name: "Bobco", slug: slugB }),
    "bob creates Bobco",
  );
  assert.notEqual(orgA, orgB);
  await rejectsWithCode(
    b.mutation(api.organizations.create, { name: "Copy", slug: slugA }),
    "CONFLICT",
    "a slug already taken",
  );

  const aliceOrgs = new Live(a, api.organizations.listMine, {});
  const bobOrgs = new Live(b, api.organizations.listMine, {});
  await aliceOrgs.waitForValue(
    (v) =>
      v.length === 1 &&
      v[0]._id === orgA &&
      v[0].role === "owner" &&
      v[0].slug === slugA &&
      v[0].name === "Acme",
    "alice's organizations: [Acme as owner]",
  );
  await bobOrgs.waitForValue(
    (v) => v.length === 1 && v[0]._id === orgB && v[0].role === "owner",
    "bob's organizations: [Bobco as owner]",
  );

  // Live lists, each checked on every value it ever delivers.
  const aliceA = new Live(
    a,
    api.todos.list,
    { organizationId: orgA },
    { check: onlyOrg(orgA, "A:") },
  );
  const bobB = new Live(
    b,
    api.todos.list,
    { organizationId: orgB },
    { check: onlyOrg(orgB, "B:") },
  );
  // Bob subscribes to Acme before he is a member: FORBIDDEN, and the same
  // subscription must come alive once he joins.
  const bobA = new Live(
    b,
    api.todos.list,
    { organizationId: orgA },
    { check: onlyOrg(orgA, "A:") },
  );
  const aliceB = new Live(a, api.todos.list, { organizationId: orgB });
  assertCode(
    await bobA.waitForError("bob's Acme list before joining"),
    "FORBIDDEN",
    "todos:list of Acme by bob before joining",
  );
  assertCode(
    await aliceB.waitForError("alice's Bobco list"),
    "FORBIDDEN",
    "todos:list of Bobco by alice",
  );
  await aliceA.waitForValue((v) => v.length === 0, "alice's empty Acme list");
  await bobB.waitForValue((v) => v.length === 0, "bob's empty Bobco list");

  // Interleaved writes in both organizations.
  const aTexts = [];
  const bTexts = [];
  for (let i = 0; i < 4; i++) {
    const ta = `A: alice ${i}`;
    const tb = `B: bob ${i}`;
    await Promise.all([
      ok(a.mutation(api.todos.create, { organizationId: orgA, text: ta }), `alice todo ${i}`),
      ok(b.mutation(api.todos.create, { organizationId: orgB, text: tb }), `bob todo ${i}`),
    ]);
    aTexts.push(ta);
    bTexts.push(tb);
  }
  await aliceA.waitForValue((v) => v.length === 4, "alice's 4 Acme todos");
  await bobB.waitForValue((v) => v.length === 4, "bob's 4 Bobco todos");
  assert.deepEqual(texts(aliceA.value), [...aTexts].sort());
  assert.deepEqual(texts(bobB.value), [...bTexts].sort());
  // Writing into an organization one is not a member of is refused.
  await rejectsWithCode(
    a.mutation(api.todos.create, { organizationId: orgB, text: "B: alice sneaks in" }),
    "FORBIDDEN",
    "alice creating a todo in Bobco",
  );
  // A document of another organization is NOT_FOUND by id.
  const bobTodo = bobB.value[0]._id;
  await rejectsWithCode(
    a.mutation(api.todos.toggle, { id: bobTodo }),
    "NOT_FOUND",
    "alice toggling a Bobco todo",
  );

  // Alice invites Bob; only members see the invitations.
  const invitations = new Live(a, api.organizations.invitations, { organizationId: orgA });
  await rejectsWithCode(
    b.query(api.organizations.invitations, { organizationId: orgA }),
    "FORBIDDEN",
    "bob reading Acme's invitations before joining",
  );
  const invitationId = await ok(
    a.mutation(api.organizations.invite, {
      organizationId: orgA,
      email: bob.email,
      role: "member",
    }),
    "alice invites bob",
  );
  await invitations.waitForValue(
    (v) =>
      v.some(
        (i) =>
          i._id === invitationId &&
          i.email === bob.email &&
          i.role === "member" &&
          i.status === "pending",
      ),
    "the pending invitation in alice's live list",
  );
  // Only the invited email's user may accept.
  const carol = await newUser(server.url, "Carol");
  const c = await clients.ws(carol.token);
  await rejects(
    c.mutation(api.organizations.acceptInvitation, { invitationId }),
    "carol accepting bob's invitation",
  );

  // Bob has not proved he owns his address yet: accepting is refused with a
  // message that says to verify first. He follows the mailed link, then can.
  const unverified = await rejectsWithCode(
    b.mutation(api.organizations.acceptInvitation, { invitationId }),
    "FORBIDDEN",
    "bob accepting before verifying his address",
  );
  assert.match(String(unverified?.data?.message ?? unverified?.message), /verify/);
  await verifyEmail(server.url, bob.email);
  const memberId = await ok(
    b.mutation(api.organizations.acceptInvitation, { invitationId }),
    "bob accepts",
  );
  assert.equal(typeof memberId, "string");
  await invitations.waitForValue(
    (v) => v.find((i) => i._id === invitationId)?.status === "accepted",
    "the invitation shown as accepted",
  );
  // Accepting twice creates no second membership.
  await rejects(
    b.mutation(api.organizations.acceptInvitation, { invitationId }),
    "bob accepting again",
  );

  // Bob's Acme subscription came alive; his organizations list shows both.
  await bobA.waitForValue(
    (v) => v.length === 4,
    "bob's Acme list after joining (same subscription)",
  );
  assert.deepEqual(texts(bobA.value), [...aTexts].sort());
  await bobOrgs.waitForValue((v) => v.length === 2, "bob's two organizations");
  const roles = Object.fromEntries(bobOrgs.value.map((o) => [o._id, o.role]));
  assert.deepEqual(roles, { [orgA]: "member", [orgB]: "owner" });

  const members = await ok(
    a.query(api.organizations.members, { organizationId: orgA }),
    "Acme's members",
  );
  const byUser = Object.fromEntries(members.map((m) => [m.userId, m]));
  assert.equal(
    members.length,
    2,
    `exactly two members after a repeated accept: ${JSON.stringify(members)}`,
  );
  assert.equal(byUser[alice.user.id]?.role, "owner");
  assert.equal(byUser[bob.user.id]?.role, "member");
  assert.equal(byUser[bob.user.id]?.email, bob.email);
  assert.equal(byUser[bob.user.id]?.name, "Bob");

  // Bob writes into Acme: both Acme lists see it, Bobco's does not.
  const bobInA = await ok(
    b.mutation(api.todos.create, { organizationId: orgA, text: "A: from bob" }),
    "bob's Acme todo",
  );
  await aliceA.waitForValue((v) => v.some((t) => t._id === bobInA), "alice seeing bob's Acme todo");
  assert.ok(
    bobA.value.some((t) => t._id === bobInA),
    "bob's own Acme list reflects his write",
  );
  assert.equal(bobA.value.find((t) => t._id === bobInA).createdBy, bob.user.id);
  // And more Bobco writes, which no Acme list may show.
  await ok(
    b.mutation(api.todos.create, { organizationId: orgB, text: "B: after joining" }),
    "bob's Bobco todo",
  );
  assert.equal(bobB.value.length, 5);
  assert.equal(aliceA.value.length, 5);
  // Alice is still not in Bobco.
  assertCode(aliceB.latest.error, "FORBIDDEN", "alice's Bobco list stays FORBIDDEN");

  // Removing bob takes effect on his live Acme subscription at the next commit.
  await ok(
    a.mutation(api.organizations.removeMember, { organizationId: orgA, userId: bob.user.id }),
    "alice removes bob",
  );
  assertCode(
    await bobA.waitForError("bob's Acme list after his removal"),
    "FORBIDDEN",
    "todos:list of Acme after removal",
  );
  await bobOrgs.waitForValue(
    (v) => v.length === 1 && v[0]._id === orgB,
    "bob back to one organization",
  );

  for (const live of [aliceA, bobA, bobB]) {
    live.assertChecksPassed();
    assert.ok(live.events.length > 0);
  }
  for (const live of [aliceA, bobA, bobB, aliceB, aliceOrgs, bobOrgs, invitations])
    live.unsubscribe();
});

test("Authenticate over the WebSocket: a new token re-runs queries, a forged one is refused", async () => {
  const frank = await newUser(server.url, "Frank");
  const gina = await newUser(server.url, "Gina");
  const franks = await ok(
    clients
      .http(frank.token)
      .mutation(api.organizations.create, { name: "Frank's", slug: unique("frank") }),
    "frank's organization",
  );
  const ginas = await ok(
    clients
      .http(gina.token)
      .mutation(api.organizations.create, { name: "Gina's", slug: unique("gina") }),
    "gina's organization",
  );

  // One connection, one subscription, two identities in turn.
  const client = await clients.ws(frank.token);
  const mine = new Live(client, api.organizations.listMine, {});
  await mine.waitForValue((v) => v.length === 1 && v[0]._id === franks, "frank's organizations");
  await authenticate(client, gina.token);
  await mine.waitForValue(
    (v) => v.length === 1 && v[0]._id === ginas,
    "the same subscription re-run as gina",
  );
  assert.ok(
    !mine.events.some(
      (e) => e.value?.some?.((o) => o._id === franks) && e.value.some((o) => o._id === ginas),
    ),
    "no value mixes the two identities",
  );

  // A token whose payload was changed (gina's signature, frank's sub) is refused.
  const [header, , signature] = gina.token.split(".");
  const payload = JSON.parse(Buffer.from(gina.token.split(".")[1], "base64url").toString());
  const forgedPayload = Buffer.from(JSON.stringify({ ...payload, sub: frank.user.id })).toString(
    "base64url",
  );
  const forged = `${header}.${forgedPayload}.${signature}`;
  await rejectsWithCode(
    clients.http(forged).query(api.organizations.listMine, {}),
    "UNAUTHENTICATED",
    "HTTP with a token whose sub was rewritten",
  );
  const victim = await clients.ws();
  const changes = [];
  victim.setAuth(
    async () => forged,
    (isAuthenticated) => changes.push(isAuthenticated),
  );
  const live = new Live(victim, api.organizations.listMine, {});
  assertCode(
    await live.waitForError("listMine on a connection whose token was refused"),
    "UNAUTHENTICATED",
    "listMine with a forged token over WebSocket",
  );
  await live.waitFor(() => changes.includes(false), "setAuth's onChange(false) after AuthError");
  assert.ok(!changes.includes(true), "a forged token is never confirmed");
  mine.unsubscribe();
  live.unsubscribe();
});

test("sign-out while subscribed ends the subscription with UNAUTHENTICATED", async () => {
  const erin = await newUser(server.url, "Erin");
  const e1 = await clients.ws(erin.token);
  const organizationId = await ok(
    e1.mutation(api.organizations.create, { name: "Erin's", slug: unique("erin") }),
    "erin creates an organization",
  );
  await ok(e1.mutation(api.todos.create, { organizationId, text: "before sign-out" }), "a todo");
  // Two connections authenticated with the same token.
  const e2 = await clients.ws(erin.token);
  const live1 = new Live(e1, api.todos.list, { organizationId });
  const live2 = new Live(e2, api.userProfiles.get, {});
  await live1.waitForValue((v) => v.length === 1, "erin's list");
  await live2.waitForValue((v) => v === null, "erin's (absent) profile");

  // Another session of the same user, which must keep working.
  const other = await auth.signIn(server.url, { email: erin.email, password: erin.password });
  assert.equal(other.status, 200, other.text);

  const out = await auth.signOut(server.url, erin.token);
  assert.equal(out.status, 200, `sign-out: ${out.text}`);

  // No further write: the revocation itself must reach the live subscriptions.
  assertCode(
    await live1.waitForError("todos:list to fail after sign-out"),
    "UNAUTHENTICATED",
    "todos:list after sign-out",
  );
  assertCode(
    await live2.waitForError("userProfiles:get to fail after sign-out"),
    "UNAUTHENTICATED",
    "userProfiles:get after sign-out",
  );

  assert.equal(
    (await auth.getSession(server.url, erin.token)).status,
    401,
    "get-session with the revoked token",
  );
  await rejectsWithCode(
    clients.http(erin.token).query(api.todos.list, { organizationId }),
    "UNAUTHENTICATED",
    "HTTP query with the revoked token",
  );
  await rejectsWithCode(
    e1.mutation(api.todos.create, { organizationId, text: "after sign-out" }),
    "UNAUTHENTICATED",
    "mutation on the signed-out connection",
  );

  // The user's other session is unaffected.
  const list = await ok(
    clients.http(other.json.token).query(api.todos.list, { organizationId }),
    "the other session",
  );
  assert.deepEqual(
    list.map((t) => t.text),
    ["before sign-out"],
  );
  live1.unsubscribe();
  live2.unsubscribe();
});
