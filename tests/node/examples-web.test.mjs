// The web example (`examples/web/`, the npm client in a page) in headless
// Chromium: sign in as a user who owns an organization, see its todos, and
// see a todo added by another client appear without a reload; one added from
// the page's form reaches the other client; its items load page by page with
// "Load more" on the paginated client.
//
// Needs Debian's `chromium` at /usr/bin/chromium (or `$CHROMIUM_BIN`), like
// dashboard.test.mjs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

import { chromium } from "playwright-core";

import { startServer, Clients, api, newUser, unique, ok } from "./harness.mjs";
import { serveWeb } from "../../examples/web/serve.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"];

let server;
let web;
let clients;
let profile;
let context;

before(async () => {
  server = await startServer();
  web = await serveWeb({ livebase: server.url });
  clients = new Clients(server.url);
  profile = await mkdtemp(path.join(tmpdir(), "livebase-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
});

after(async () => {
  try {
    await context?.close();
    await web?.close();
    await clients?.closeAll();
    await server?.stop();
  } finally {
    if (profile) await rm(profile, { recursive: true, force: true });
  }
});

test("the web example signs in and shows an organization's todos live", async () => {
  const owner = await newUser(server.url, "Owner");
  const http = clients.http(owner.token);
  const slug = unique("web");
  const organizationId = await ok(
    http.mutation(api.organizations.create, { name: slug, slug }),
    "organizations:create",
  );
  await ok(http.mutation(api.todos.create, { organizationId, text: "first" }), "todos:create");

  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(10_000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(web.url);
  await page.fill("#email", owner.email);
  await page.fill("#password", owner.password);
  await page.fill("#org", slug);
  await page.click("#sign-in button");
  await page.locator("#status", { hasText: `live: 1 todos in ${slug}` }).waitFor();
  await page.locator("#todos li", { hasText: "first" }).waitFor();
  await page.evaluate(() => (window.sameDocument = true));

  // Another client adds one: the page shows it, newest first.
  const id = await ok(
    http.mutation(api.todos.create, { organizationId, text: "from another client" }),
    "todos:create",
  );
  const added = page.locator("#todos li", { hasText: "from another client" });
  await added.waitFor();
  assert.equal(await added.getAttribute("data-id"), id);
  await page.locator("#status", { hasText: "live: 2 todos" }).waitFor();

  // The page's form adds one the other client sees.
  await page.fill("#text", "from the page");
  await page.click("#add button");
  await page.locator("#todos li", { hasText: "from the page" }).waitFor();
  const todos = await ok(http.query(api.todos.list, { organizationId }), "todos:list");
  assert.deepEqual(
    todos.map((t) => t.text),
    ["from the page", "from another client", "first"],
  );
  assert.equal(await page.evaluate(() => window.sameDocument), true, "no reload");
  assert.deepEqual(pageErrors, []);
});

test("the web example pages through an organization's items with Load more", async () => {
  const owner = await newUser(server.url, "Owner");
  const http = clients.http(owner.token);
  const slug = unique("items");
  const organizationId = await ok(
    http.mutation(api.organizations.create, { name: slug, slug }),
    "organizations:create",
  );
  for (let i = 0; i < 12; i++) {
    await ok(
      http.mutation(api.items.create, { name: `item ${i}`, status: "open", organizationId }),
      `items:create ${i}`,
    );
  }

  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(web.url);
  await page.fill("#email", owner.email);
  await page.fill("#password", owner.password);
  await page.fill("#org", slug);
  await page.click("#sign-in button");
  const names = () => page.locator("#items li").allTextContents();
  const newestFirst = (n) => Array.from({ length: n }, (_, i) => `item ${11 - i}`);

  await page.locator("#items-status", { hasText: "5 items, CanLoadMore" }).waitFor();
  assert.deepEqual(await names(), newestFirst(5));
  await page.click("#load-more");
  await page.locator("#items-status", { hasText: "10 items, CanLoadMore" }).waitFor();
  assert.deepEqual(await names(), newestFirst(10));
  await page.click("#load-more");
  await page.locator("#items-status", { hasText: "12 items, Exhausted" }).waitFor();
  assert.deepEqual(await names(), newestFirst(12));
  assert.equal(await page.locator("#load-more").isDisabled(), true, "nothing more to load");

  // A new item appears at the top of the loaded pages, none lost.
  await ok(
    http.mutation(api.items.create, { name: "item 12", status: "open", organizationId }),
    "items:create 12",
  );
  await page.locator("#items-status", { hasText: "13 items, Exhausted" }).waitFor();
  assert.deepEqual(await names(), ["item 12", ...newestFirst(12)]);
  assert.deepEqual(pageErrors, []);
  await page.close();
});
