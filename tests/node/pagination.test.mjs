// Paginated queries with the official client (PROTOCOL.md "Paginated
// queries", APP.md `items:list`): `ConvexClient.onPaginatedUpdate_experimental`
// keeps one live query per page; the server keeps each page's end where its
// first run put it (the query's journal), so rows inserted and deleted while
// pages are loaded are neither lost nor repeated — across a server restart
// too, when the client re-adds its pages with their journals. Cursors are
// tamper-evident: a forged one, or one from another query, is
// INVALID_ARGUMENT.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  startServer,
  startFreshServer,
  freePort,
  freshDataDir,
  removeDataDir,
  Clients,
  api,
  newUser,
  unique,
  ok,
  rejectsWithCode,
  withTimeout,
} from "./harness.mjs";

/** A live paginated subscription recording every result the client delivers. */
class LivePages {
  constructor(client, args, initialNumItems) {
    this.results = [];
    this.errors = [];
    this.waiters = new Set();
    this.unsubscribe = client.onPaginatedUpdate_experimental(
      api.items.list,
      args,
      { initialNumItems },
      (result) => this.#push(() => this.results.push(result)),
      (error) => this.#push(() => this.errors.push(error)),
    );
  }

  #push(record) {
    record();
    for (const w of [...this.waiters]) w();
  }

  get latest() {
    return this.results.at(-1);
  }

  names() {
    return this.latest.results.map((i) => i.name);
  }

  /** Waits until the latest result satisfies `predicate`; returns it. */
  waitFor(predicate, what, ms = 20_000) {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          if (this.errors.length > 0) {
            this.waiters.delete(check);
            reject(this.errors[0]);
            return;
          }
          const r = this.latest;
          if (r !== undefined && predicate(r)) {
            this.waiters.delete(check);
            resolve(r);
          }
        };
        this.waiters.add(check);
        check();
      }),
      ms,
      () =>
        `${what} (latest: ${this.latest?.status} ${JSON.stringify(
          this.latest?.results.map((i) => i.name),
        )})`,
    );
  }

  /** Waits until the concatenated pages are exactly `names` with `status`. */
  waitForNames(names, status, what) {
    return this.waitFor(
      (r) =>
        r.status === status &&
        JSON.stringify(r.results.map((i) => i.name)) === JSON.stringify(names),
      what,
    );
  }
}

const nameOf = (i) => `item-${String(i).padStart(2, "0")}`;

/** An owner with an organization holding 25 items `item-00` … `item-24`. */
async function orgWith25Items(url, clients) {
  const owner = await newUser(url, "Owner");
  const http = clients.http(owner.token);
  const organizationId = await ok(
    http.mutation(api.organizations.create, { name: "Pages", slug: unique("pages") }),
    "organizations:create",
  );
  const ids = [];
  for (let i = 0; i < 25; i++) {
    ids.push(
      await ok(
        http.mutation(api.items.create, { name: nameOf(i), status: "open", organizationId }),
        `items:create ${i}`,
      ),
    );
  }
  return { owner, http, organizationId, ids };
}

/** Walks the list in pages of 10 to Exhausted; returns the LivePages. */
async function walkToExhausted(client, organizationId) {
  const pages = new LivePages(client, { organizationId }, 10);
  const all = Array.from({ length: 25 }, (_, i) => nameOf(24 - i)); // newest first
  await pages.waitForNames(all.slice(0, 10), "CanLoadMore", "the first page of 10");
  assert.equal(pages.latest.loadMore(10), true, "loadMore starts the second page");
  await pages.waitForNames(all.slice(0, 20), "CanLoadMore", "two pages of 10");
  assert.equal(pages.latest.loadMore(10), true, "loadMore starts the third page");
  await pages.waitForNames(all, "Exhausted", "all 25 items, the last page short and done");
  assert.equal(pages.latest.loadMore(10), false, "nothing more to load once exhausted");
  return { pages, all };
}

test("pages of 10 walk 25 items to Exhausted and stay contiguous while rows come and go", async () => {
  const server = await startFreshServer();
  const clients = new Clients(server.url);
  try {
    const { owner, http, organizationId, ids } = await orgWith25Items(server.url, clients);
    const client = await clients.ws(owner.token);
    const { pages, all } = await walkToExhausted(client, organizationId);

    // A new item at the top: the first page grows to 11, nothing shifts.
    await ok(
      http.mutation(api.items.create, { name: "top", status: "open", organizationId }),
      "items:create top",
    );
    let expected = ["top", ...all];
    await pages.waitForNames(expected, "Exhausted", "the new item first, every old one once");

    // A delete inside the second page (item-10): that page shrinks.
    await ok(http.mutation(api.items.remove, { id: ids[10] }), "items:remove item-10");
    expected = expected.filter((n) => n !== nameOf(10));
    await pages.waitForNames(expected, "Exhausted", "item-10 gone, no other lost or repeated");

    // Deleting a page's last row (its end key) keeps the pages joined too.
    await ok(http.mutation(api.items.remove, { id: ids[15] }), "items:remove item-15");
    expected = expected.filter((n) => n !== nameOf(15));
    await pages.waitForNames(expected, "Exhausted", "the first page's last row gone");
    assert.equal(new Set(pages.names()).size, pages.names().length, "no item twice");
    pages.unsubscribe();
  } finally {
    await clients.closeAll();
    await server.stop();
  }
});

test("a reconnect keeps each page's end: the client's journals are honoured", async () => {
  const dataDir = await freshDataDir();
  const port = await freePort();
  let server = await startServer({ port, dataDir });
  const clients = new Clients(server.url);
  try {
    const { owner, http, organizationId } = await orgWith25Items(server.url, clients);
    const client = await clients.ws(owner.token);
    const { pages, all } = await walkToExhausted(client, organizationId);
    await ok(
      http.mutation(api.items.create, { name: "top", status: "open", organizationId }),
      "items:create top",
    );
    const expected = ["top", ...all];
    await pages.waitForNames(expected, "Exhausted", "the first page grown to 11");

    // The server restarts; the client re-adds its three pages. Without the
    // journal the first page would end after 10 rows again and item-15, its
    // 11th, would fall between the first and second page.
    await server.stop();
    server = await startServer({ port, dataDir });
    const after = clients.http(owner.token);
    await ok(
      after.mutation(api.items.create, { name: "after", status: "open", organizationId }),
      "items:create after the restart",
    );
    await pages.waitForNames(
      ["after", ...expected],
      "Exhausted",
      "every item once after the reconnect",
    );
    assert.ok(client.monitor.connections >= 2, "the client reconnected");
    pages.unsubscribe();
  } finally {
    try {
      await clients.closeAll();
      await server.stop();
    } finally {
      await removeDataDir(dataDir);
    }
  }
});

test("forged and foreign cursors are INVALID_ARGUMENT; non-members are refused", async () => {
  const server = await startFreshServer();
  const clients = new Clients(server.url);
  try {
    const { owner, http, organizationId } = await orgWith25Items(server.url, clients);
    const first = await ok(
      http.query(api.items.list, {
        organizationId,
        paginationOpts: { numItems: 10, cursor: null },
      }),
      "items:list first page",
    );
    assert.equal(first.page.length, 10);
    assert.equal(first.isDone, false);
    assert.equal(typeof first.continueCursor, "string");
    const second = await ok(
      http.query(api.items.list, {
        organizationId,
        paginationOpts: { numItems: 10, cursor: first.continueCursor },
      }),
      "items:list second page",
    );
    assert.deepEqual(
      second.page.map((i) => i.name),
      Array.from({ length: 10 }, (_, i) => nameOf(14 - i)),
    );

    await rejectsWithCode(
      http.query(api.items.list, {
        organizationId,
        paginationOpts: { numItems: 10, cursor: "forged-cursor" },
      }),
      "INVALID_ARGUMENT",
      "a made-up cursor",
    );
    // One byte of a real cursor changed.
    const bytes = Buffer.from(first.continueCursor, "base64url");
    bytes[bytes.length - 20] ^= 1;
    await rejectsWithCode(
      http.query(api.items.list, {
        organizationId,
        paginationOpts: { numItems: 10, cursor: bytes.toString("base64url") },
      }),
      "INVALID_ARGUMENT",
      "an edited cursor",
    );
    // A cursor of another organization's list, used by its own member.
    const other = await ok(
      http.mutation(api.organizations.create, { name: "Other", slug: unique("other") }),
      "organizations:create other",
    );
    await ok(
      http.mutation(api.items.create, { name: "x", status: "open", organizationId: other }),
      "items:create in other",
    );
    await rejectsWithCode(
      http.query(api.items.list, {
        organizationId: other,
        paginationOpts: { numItems: 10, cursor: first.continueCursor },
      }),
      "INVALID_ARGUMENT",
      "another query's cursor",
    );
    await rejectsWithCode(
      http.query(api.items.list, {
        organizationId: other,
        paginationOpts: { numItems: 10, cursor: null, endCursor: first.continueCursor },
      }),
      "INVALID_ARGUMENT",
      "another query's end cursor",
    );

    const stranger = await newUser(server.url, "Stranger");
    await rejectsWithCode(
      clients.http(stranger.token).query(api.items.list, {
        organizationId,
        paginationOpts: { numItems: 10, cursor: null },
      }),
      "FORBIDDEN",
      "a non-member",
    );
  } finally {
    await clients.closeAll();
    await server.stop();
  }
});

test("a burst of inserts makes the first page split, and every row stays once", async () => {
  const server = await startFreshServer();
  const clients = new Clients(server.url);
  try {
    const { owner, http, organizationId } = await orgWith25Items(server.url, clients);
    const client = await clients.ws(owner.token);
    const { pages, all } = await walkToExhausted(client, organizationId);
    // The client's own page list (convex 1.48's paginated client, pinned).
    const pageCount = () =>
      [...client.paginatedClient.paginatedQuerySet.values()][0].pageKeys.length;
    assert.equal(pageCount(), 3);

    const burst = Array.from({ length: 25 }, (_, i) => `burst-${String(i).padStart(2, "0")}`);
    for (const name of burst) {
      await ok(
        http.mutation(api.items.create, { name, status: "open", organizationId }),
        `items:create ${name}`,
      );
    }
    const expected = [...[...burst].reverse(), ...all];
    await pages.waitFor(
      (r) =>
        r.status === "Exhausted" &&
        JSON.stringify(r.results.map((i) => i.name)) === JSON.stringify(expected) &&
        pageCount() > 3,
      "the first page split into two, all 50 items once, newest first",
    );
    pages.unsubscribe();
  } finally {
    await clients.closeAll();
    await server.stop();
  }
});
