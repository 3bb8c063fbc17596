// The dev dashboard (`livebase dev`, /_dashboard) in headless Chromium: a
// document created through the API appears on the open page without a
// reload, the call shows in the function log, the sign-up's verification mail in
// the outbox and its job in the scheduled jobs — and document content is
// shown as text, never as markup. A failed rebuild of `livebase dev` shows as
// a banner with the compiler's output until a build succeeds. `livebase
// serve` has no dashboard.
//
// Needs Debian's `chromium` at /usr/bin/chromium (or `$CHROMIUM_BIN`);
// playwright-core drives it and never downloads a browser.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { access, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { chromium } from "playwright-core";

import {
  startServer,
  livebaseBin,
  waitForDevBuild,
  Clients,
  api,
  newUser,
  unique,
  ok,
  rejects,
  withTimeout,
} from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** Longest wait for the page to show something. */
const SHOWN_MS = 10_000;

let server;
let clients;
let profile;
let context;
let page;
/** The folder `livebase dev` runs in: `src/` (watched) and `build.sh`, which
 * fails while a file `fail` is there. */
let project;

before(async () => {
  try {
    await access(CHROMIUM, fsConstants.X_OK);
  } catch {
    throw new Error(
      `no Chromium at ${CHROMIUM}: install Debian's with ` +
        "`apt-get install -y chromium`, or set CHROMIUM_BIN",
    );
  }
  project = await mkdtemp(path.join(tmpdir(), "livebase-dashboard-dev-"));
  await mkdir(path.join(project, "src"));
  await writeFile(path.join(project, "src", "app.rs"), "// version 1\n");
  await writeFile(
    path.join(project, "build.sh"),
    "if [ -e fail ]; then echo 'error[E0308]: mismatched types <b>not markup</b>' >&2; exit 1; fi\n",
  );
  server = await startServer({
    command: "dev",
    cwd: project,
    args: ["--watch", "src", "--build-cmd", "sh build.sh", "--bin", livebaseBin()],
  });
  clients = new Clients(server.url);
  profile = await mkdtemp(path.join(tmpdir(), "livebase-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(SHOWN_MS);
});

after(async () => {
  try {
    // Stopped while the page still holds its event stream open: the server
    // must end that stream and exit cleanly.
    await server?.stop();
  } finally {
    await context?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
    if (project) await rm(project, { recursive: true, force: true });
  }
});

/** The rows of `table` (a selector) holding `text`. */
function row(table, text) {
  return page.locator(`${table} tbody tr`, { hasText: text });
}

test("the dashboard shows documents live, the call log, jobs and the outbox", async () => {
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));

  await page.goto(`${server.url}/_dashboard`);
  await page.locator("#status", { hasText: "live" }).waitFor();
  // Set on this very document: still there later means no reload happened.
  await page.evaluate(() => (window.sameDocument = true));

  const owner = await newUser(server.url, "Owner");
  const http = clients.http(owner.token);
  const slug = unique("dash");
  const organizationId = await ok(
    http.mutation(api.organizations.create, { name: `Org ${slug}`, slug }),
    "organizations:create",
  );

  await page.locator('#tables li[data-table="todos"]').click();
  await page.locator("#table-name", { hasText: "todos" }).waitFor();
  assert.equal(await page.locator("#docs tbody tr").count(), 0, "no todos yet");

  const text = `Buy milk ${unique("todo")}`;
  const todoId = await ok(
    http.mutation(api.todos.create, { organizationId, text }),
    "todos:create",
  );
  // Within SHOWN_MS: only the event stream can do it, the page's fallback
  // refresh is slower.
  const todoRow = row("#docs", text);
  await todoRow.waitFor();
  assert.equal(await todoRow.getAttribute("data-id"), todoId);
  await page.locator('#tables li[data-table="todos"] .count', { hasText: /^1$/ }).waitFor();
  // `livebase dev` prints the mail's link on its log line: one click away.
  await withTimeout(
    (async () => {
      while (!/mail {2}\S+ → \S+\.eml {2}http:\/\/\S+\/api\/auth\/verify-email\?token=\S+/.test(server.logs())) {
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
    10_000,
    () => `the mail log line with its link in:\n${server.logs()}`,
  );

  assert.equal(await page.evaluate(() => window.sameDocument), true, "the page did not reload");

  // Content is text: markup in a document is shown, not run or rendered.
  const markup = `<img src=x onerror="window.pwned=1"><b class="injected">bold</b> ${unique("x")}`;
  await ok(http.mutation(api.todos.create, { organizationId, text: markup }), "todos:create");
  await row("#docs", markup).waitFor();
  assert.equal(await page.locator("#docs .injected, #docs img").count(), 0);
  assert.equal(await page.evaluate(() => window.pwned), undefined);

  // A failing call, for the log.
  await rejects(
    http.mutation(api.todos.create, { organizationId: "nope", text: "x" }),
    "todos:create with a bad organization id",
  );

  await page.locator('nav button[data-tab="calls"]').click();
  const created = row("#calls", "todos:create").filter({ hasText: "ok" }).first();
  await created.waitFor();
  assert.match(await created.innerText(), /mutation/);
  assert.match(await created.innerText(), /\d+\.\d\d ms/);
  await row("#calls", "todos:create").filter({ hasText: "failed" }).first().waitFor();

  // Sign-up scheduled the verification mail: a job that ran, and a mail in the
  // outbox with its link.
  await page.locator('nav button[data-tab="jobs"]').click();
  await row("#jobs", "emails:send").filter({ hasText: "success" }).first().waitFor();

  await page.locator('nav button[data-tab="outbox"]').click();
  // The mail's job, by status: sent, after one attempt, with where it went.
  const mailJob = row("#mail-jobs", owner.email).filter({ hasText: "sent" }).first();
  await mailJob.waitFor();
  assert.match(await mailJob.innerText(), /verify-email/);
  assert.match(await page.locator("#mail-jobs-summary").innerText(), /\d+ sent/);
  const mail = page.locator("#mails li", { hasText: owner.email });
  await mail.waitFor();
  await mail.click();
  await page.locator("#mail-subject", { hasText: "Confirm your email address" }).waitFor();
  assert.equal(await page.locator("#mail-to").innerText(), owner.email);
  const frame = page.frameLocator("#mail-body iframe");
  await frame.locator("body", { hasText: "Hello Owner," }).waitFor();
  assert.equal(await page.locator("#mail-body iframe").getAttribute("sandbox"), "");
  await page.locator('.mail-parts button[data-part="text"]').click();
  await page.locator("#mail-body pre", { hasText: "Hello Owner," }).waitFor();

  // `livebase dev` prints the mail's link on its log line: one click away.
  await withTimeout(
    (async () => {
      while (!/mail {2}\S+ → \S+\.eml {2}http:\/\/\S+\/api\/auth\/verify-email\?token=\S+/.test(server.logs())) {
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
    10_000,
    () => `the mail log line with its link in:\n${server.logs()}`,
  );

  assert.equal(await page.evaluate(() => window.sameDocument), true, "the page did not reload");
  assert.deepEqual(pageErrors, [], "no script errors on the page");
});

test("the Files tab lists a stored file and previews it through its signed URL", async () => {
  // A 1×1 PNG, uploaded as Convex's docs do.
  const png = Uint8Array.from(
    atob("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="),
    (c) => c.charCodeAt(0),
  );
  const user = await newUser(server.url, "Uploader");
  const http = clients.http(user.token);
  const postUrl = await ok(http.mutation(api.files.generateUploadUrl, {}), "an upload URL");
  const uploaded = await fetch(postUrl, { method: "POST", headers: { "Content-Type": "image/png" }, body: png });
  assert.equal(uploaded.status, 200);
  const { storageId } = await uploaded.json();

  await page.locator('nav button[data-tab="files"]').click();
  const file = page.locator(`#files tbody tr[data-id="${storageId}"]`);
  await file.waitFor();
  assert.match(await file.innerText(), /image\/png/);
  assert.match(await file.innerText(), new RegExp(`${png.length} B`));
  // The preview loaded: the page's policy lets it show images from its server.
  const preview = file.locator("img.preview");
  await withTimeout(
    (async () => {
      while ((await preview.evaluate((img) => img.complete && img.naturalWidth)) !== 1) {
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
    SHOWN_MS,
    "the preview loads",
  );
});

test("the dashboard's JSON endpoints", async () => {
  const get = async (p) => {
    const res = await fetch(`${server.url}/_dashboard/api/${p}`);
    return { status: res.status, json: await res.json() };
  };
  const { json: listing } = await get("tables");
  const todos = listing.tables.find((t) => t.name === "todos");
  assert.deepEqual(todos, { name: "todos", system: false, count: 2, more: false });
  assert.ok(listing.tables.some((t) => t.name === "_scheduled_functions" && t.system));

  const { json: docs } = await get("tables/todos?limit=1");
  assert.equal(docs.documents.length, 1);
  assert.equal(docs.more, true);
  assert.equal(typeof docs.documents[0]._id, "string");
  assert.equal((await get("tables/nope")).status, 404);

  const { json: calls } = await get("calls");
  assert.ok(calls.calls.length > 0);
  const last = calls.calls.at(-1);
  assert.deepEqual(Object.keys(last).sort(), ["endedMs", "error", "kind", "ms", "ok", "path", "seq"]);
  const later = (await get(`calls?after=${last.seq}`)).json.calls;
  assert.ok(later.every((c) => c.seq > last.seq), "only the calls after `after`");

  const { json: outbox } = await get("outbox");
  assert.equal(outbox.outbox, path.join(server.dataDir, "outbox"));
  assert.ok(
    outbox.mails.some(
      (m) =>
        m.subject === "Confirm your email address" &&
        m.text?.includes("Hello Owner,") &&
        m.text?.includes("/api/auth/verify-email?token="),
    ),
  );

  // No rebuild yet.
  assert.deepEqual((await get("build")).json, { status: "none" });
});

test("a failed rebuild shows as a banner with the compiler's output until a build succeeds", async () => {
  await page.goto(`${server.url}/_dashboard`);
  await page.locator("#status", { hasText: "live" }).waitFor();
  assert.equal(await page.locator("#build").isHidden(), true, "no banner before any build");

  await writeFile(path.join(project, "fail"), "");
  await writeFile(path.join(project, "src", "app.rs"), "// version 2\n");
  await page.locator("#build").waitFor({ state: "visible" });
  await page.locator("#build-output", { hasText: "error[E0308]: mismatched types" }).waitFor();
  // The compiler's output is text, never markup.
  assert.equal(await page.locator("#build-output b").count(), 0);
  assert.match(await page.locator("#build-output").textContent(), /<b>not markup<\/b>/);
  assert.match(await page.locator("#build-command").textContent(), /sh build\.sh/);
  // The previous build keeps serving.
  assert.equal((await fetch(`${server.url}/health`)).status, 200);

  await rm(path.join(project, "fail"));
  await writeFile(path.join(project, "src", "app.rs"), "// version 3\n");
  await waitForDevBuild(server.url, "ok", 30_000);
  await page.locator("#build").waitFor({ state: "hidden" });
  await page.locator("#status", { hasText: "live" }).waitFor();
});

test("`livebase serve` does not serve the dashboard", async () => {
  const prod = await startServer();
  try {
    for (const p of ["/_dashboard", "/_dashboard/", "/_dashboard/api/tables", "/_dashboard/api/events"]) {
      const res = await fetch(`${prod.url}${p}`);
      await res.arrayBuffer();
      assert.equal(res.status, 404, `GET ${p} on serve`);
    }
  } finally {
    await prod.stop();
  }
});
