// The tutorial (`docs/tutorial/typed-feature.md`) as written: every block
// marked `<!-- tutorial: NAME -->` is taken from the page — Rust files and
// edits of `functions/`, the excerpt of the generated types, the React page
// and the commands that build it. They are applied to a temporary copy of the
// application (`functions/`, with the repository's `src/main.rs` as its
// binary, as in dev-cargo.test.mjs), which is built with cargo; its
// `codegen` output must hold the excerpt, `tsc` must accept the page (and
// refuse a misspelt field), esbuild bundles it, and in headless Chromium a
// bookmark added from the page's form, then one added by a second client,
// appears in the rendered list with nothing else done.
//
// Cost: on a target folder where `cargo test` already built the
// dependencies, the build compiles the copy of the application and the
// binary (about 30–60 s on two cores). Needs `cargo` on the PATH and Debian's
// `chromium` (or `$CHROMIUM_BIN`), like dashboard.test.mjs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  access,
  cp,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  symlink,
  unlink,
  writeFile,
} from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { chromium } from "playwright-core";

import {
  startServer,
  Clients,
  api,
  newUser,
  unique,
  ok,
  rejects,
  withTimeout,
  writeHostCrate,
  workspaceDependency,
  REPO,
} from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TUTORIAL = path.join(REPO, "docs/tutorial/typed-feature.md");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"];
const BIN = "tutorial-app";

/** Runs a command (bounded); rejects with its output when it fails. */
function run(file, args, options, ms) {
  return withTimeout(
    new Promise((resolve, reject) => {
      execFile(file, args, { maxBuffer: 64 << 20, ...options }, (error, stdout, stderr) => {
        if (error) {
          const e = new Error(
            `${file} ${args.join(" ")} failed: ${error.message}\n${stdout}\n${stderr}`,
          );
          e.stdout = stdout;
          reject(e);
        } else resolve({ stdout, stderr });
      });
    }),
    ms,
    `${file} ${args.join(" ")}`,
  );
}

/** The page's marked blocks: name → `{lang, code}`, in the page's order. */
export function tutorialBlocks(markdown) {
  const blocks = new Map();
  const marked = /<!-- tutorial: (.+?) -->\n```(\w*)\n([\s\S]*?)\n```/g;
  for (const [, name, lang, code] of markdown.matchAll(marked)) {
    assert.ok(!blocks.has(name), `the tutorial marks ${name} twice`);
    blocks.set(name, { lang, code: `${code}\n` });
  }
  return blocks;
}

/**
 * Applies a ```diff block the way a reader does: a context line (` x`)
 * moves to the next line reading `x` (spaces around it ignored), `-x`
 * removes the next line reading `x`, `+x` inserts `x` where it stands.
 */
export function applyEdit(source, diff, name) {
  const lines = source.split("\n");
  let at = 0;
  const find = (text) => {
    const i = lines.findIndex((line, j) => j >= at && line.trim() === text.trim());
    assert.ok(i >= 0, `${name}: no line ${JSON.stringify(text)} after line ${at}`);
    return i;
  };
  for (const line of diff.split("\n").filter((l) => l !== "")) {
    const [mark, text] = [line[0], line.slice(1)];
    if (mark === " ") at = find(text) + 1;
    else if (mark === "-") lines.splice((at = find(text)), 1);
    else if (mark === "+") lines.splice(at++, 0, text);
    else assert.fail(`${name}: a diff line starts with " ", "-" or "+": ${line}`);
  }
  return lines.join("\n");
}

/** The temporary copy of the application: `functions/` with the repository's
 * `src/main.rs` as the binary `tutorial-app`. */
async function writeApp(dir) {
  await writeHostCrate(dir, BIN);
  // The application as the repository has it: its sources, and its manifest
  // with the workspace's dependencies spelt out.
  for (const part of ["src", "emails"]) {
    await cp(path.join(REPO, "functions", part), path.join(dir, "functions", part), {
      recursive: true,
    });
  }
  const manifest = await readFile(path.join(REPO, "functions", "Cargo.toml"), "utf8");
  const deps = await Promise.all([
    ...manifest
      .split("[dependencies]")[1]
      .split("\n[")[0]
      .matchAll(/^([\w-]+)\.workspace = true$/gm),
  ].map(([, name]) =>
    name.startsWith("livebase-")
      ? `${name} = { path = "${REPO}/${name.slice("livebase-".length)}" }`
      : workspaceDependency(name),
  ));
  assert.ok(deps.length >= 2, `functions/Cargo.toml's dependencies: ${manifest}`);
  await writeFile(
    path.join(dir, "functions", "Cargo.toml"),
    `[package]
name = "livebase-functions"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
${deps.join("\n")}
`,
  );
}

/** Writes the tutorial's blocks named `prefix…` into `dir`: a ```diff edits
 * the file, anything else is a new file. */
async function applyBlocks(dir, blocks, prefix) {
  const applied = [];
  for (const [name, { lang, code }] of blocks) {
    if (!name.startsWith(prefix)) continue;
    const file = path.join(dir, name);
    if (lang === "diff") {
      await writeFile(file, applyEdit(await readFile(file, "utf8"), code, name));
    } else {
      await assert.rejects(access(file), `${name} is a new file`);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, code);
    }
    applied.push(name);
  }
  return applied;
}

/** `tsc -p .` in `web`: `{code, output}`. */
async function typeCheck(web) {
  try {
    await run(path.join(web, "node_modules/.bin/tsc"), ["-p", "."], { cwd: web }, 60_000);
    return { code: 0, output: "" };
  } catch (e) {
    return { code: 1, output: `${e.stdout ?? ""}${e.message}` };
  }
}

test(
  "the tutorial's blocks build a bookmarks feature whose React list is live",
  { timeout: 170_000 },
  async () => {
    const blocks = tutorialBlocks(await readFile(TUTORIAL, "utf8"));
    const dir = await mkdtemp(path.join(tmpdir(), "livebase-tutorial-"));
    const targetDir = process.env.CARGO_TARGET_DIR
      ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
      : path.join(REPO, "target");
    let server;
    let clients;
    let context;
    try {
      // Steps 1 and 2: the table, the logic and the functions, in a copy of
      // the application.
      await writeApp(dir);
      const rust = await applyBlocks(dir, blocks, "functions/");
      assert.deepEqual([...rust].sort(), [
        "functions/src/bookmarks.rs",
        "functions/src/features/bookmarks/logic.rs",
        "functions/src/features/bookmarks/mod.rs",
        "functions/src/features/bookmarks/schema.rs",
        "functions/src/features/mod.rs",
        "functions/src/lib.rs",
        "functions/src/shared/auth/permissions.rs",
      ]);
      let started = Date.now();
      await run(
        "cargo",
        ["build", "--bin", BIN],
        { cwd: dir, env: { ...process.env, CARGO_TARGET_DIR: targetDir } },
        150_000,
      );
      console.log(
        `the tutorial's application built in ${Math.round((Date.now() - started) / 1000)} s`,
      );
      const bin = path.join(targetDir, "debug", BIN);

      // Step 3: the generated types hold the page's excerpt.
      const web = path.join(dir, "web");
      await run(bin, ["codegen", "--out", path.join(web, "src", "convex")], {}, 30_000);
      const generated = await readFile(path.join(web, "src", "convex", "api.d.ts"), "utf8");
      const excerpt = blocks.get("generated web/src/convex/api.d.ts");
      assert.ok(excerpt, "the tutorial shows the generated types");
      for (const line of excerpt.code.split("\n").filter((l) => l.trim() !== "")) {
        assert.ok(
          generated.split("\n").some((g) => g.trim() === line.trim()),
          `the generated api.d.ts has the tutorial's line ${line.trim()}:\n${generated}`,
        );
      }

      // Step 4: the page, type-checked and bundled by the tutorial's commands.
      const page = await applyBlocks(dir, blocks, "web/");
      assert.ok(
        page.includes("web/src/Bookmarks.tsx") && page.includes("web/src/main.tsx"),
        page.join(),
      );
      await symlink(path.join(HERE, "node_modules"), path.join(web, "node_modules"), "dir");
      const commands = blocks.get("commands in web/");
      assert.ok(commands, "the tutorial gives the commands that build the page");
      started = Date.now();
      for (const line of commands.code.split("\n").filter((l) => l.trim() !== "")) {
        const [npx, tool, ...args] = line.trim().split(/\s+/);
        assert.equal(npx, "npx", line);
        await run(path.join(web, "node_modules/.bin", tool), args, { cwd: web }, 60_000);
      }
      console.log(`tsc and esbuild took ${Math.round((Date.now() - started) / 1000)} s`);
      // The generated types do refuse a misread result.
      const misuse = path.join(web, "src", "misuse.ts");
      await writeFile(
        misuse,
        `import type { Doc } from "./convex/api.js";\nexport const title = (b: Doc<"bookmarks">): string => b.titel;\n`,
      );
      const refused = await typeCheck(web);
      assert.notEqual(refused.code, 0, "tsc accepted a misspelt field");
      assert.match(refused.output, /misuse\.ts.*titel/, refused.output);
      await unlink(misuse);

      // The server, a user and their organization, over HTTP.
      server = await startServer({ bin });
      clients = new Clients(server.url);
      const owner = await newUser(server.url, "Owner");
      const http = clients.http(owner.token);
      const slug = unique("tutorial");
      const organizationId = await ok(
        http.mutation(api.organizations.create, { name: `Org ${slug}`, slug }),
        "organizations:create",
      );
      // The checks hold: another user reads nothing of the organization.
      const stranger = await newUser(server.url, "Stranger");
      await rejects(
        clients.http(stranger.token).query(api.bookmarks.list, { organizationId }),
        "bookmarks:list by a non-member",
      );

      // The page in Chromium: the list, live.
      await access(CHROMIUM, fsConstants.X_OK).catch(() => {
        throw new Error(
          `no Chromium at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_BIN`,
        );
      });
      const profile = path.join(dir, "chromium");
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_ARGS,
        timeout: 30_000,
      });
      const tab = context.pages()[0] ?? (await context.newPage());
      tab.setDefaultTimeout(10_000);
      const pageErrors = [];
      tab.on("pageerror", (e) => pageErrors.push(e.message));
      const hash = new URLSearchParams({
        server: server.url,
        token: owner.token,
        org: organizationId,
      });
      await tab.goto(`${pathToFileURL(path.join(web, "index.html")).href}#${hash}`);
      await tab.locator("#bookmarks").waitFor({ state: "attached" });
      assert.equal(await tab.locator("#bookmarks li").count(), 0, "no bookmarks yet");

      // Added from the page's form.
      const first = `Docs ${unique("b")}`;
      await tab.getByLabel("Title").fill(first);
      await tab.getByLabel("Address").fill("https://example.com/docs");
      await tab.getByRole("button", { name: "Add" }).click();
      await tab.locator("#bookmarks li", { hasText: first }).waitFor();
      assert.equal(
        await tab.locator("#bookmarks li a", { hasText: first }).getAttribute("href"),
        "https://example.com/docs",
      );

      // Added by a second client: the page shows it with nothing done.
      await tab.evaluate(() => (window.sameDocument = true));
      const second = `Blog ${unique("b")}`;
      const id = await ok(
        http.mutation(api.bookmarks.add, {
          organizationId,
          url: "https://example.com/blog",
          title: second,
        }),
        "bookmarks:add",
      );
      assert.match(id, /^bookmarks_/);
      await tab.locator("#bookmarks li", { hasText: second }).waitFor();
      assert.deepEqual(
        await tab.locator("#bookmarks li").allInnerTexts(),
        [second, first],
        "newest first",
      );
      assert.equal(await tab.evaluate(() => window.sameDocument), true, "the page did not reload");
      assert.deepEqual(pageErrors, []);
    } finally {
      try {
        await context?.close();
        await clients?.closeAll();
        await server?.stop();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
  },
);
