// The dev loop for real: a temporary copy of a tiny application (its own
// crate, with path dependencies on this repository's crates and the
// repository's `src/main.rs` as its binary) is built with cargo into the
// repository's target folder (`$CARGO_TARGET_DIR`, or `target/`), started
// with `dev`, and edited while a ConvexClient holds its query: the new result
// reaches the client with nothing done on its side, and a compile error is
// reported in the terminal and the dashboard while the old build serves.
//
// Cost: on a target folder where `cargo test` already built the
// dependencies, the first build compiles the repository's crates and the
// application (about 15–40 s on two cores), then each save rebuilds the
// application alone (a few seconds). It needs `cargo` on the PATH. Alone in
// its file, so the suite's per-file timeout (`--test-timeout`) counts it
// apart.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

import {
  startServer,
  Clients,
  Live,
  api,
  ok,
  withTimeout,
  devBuildStatus,
  waitForDevBuild,
  waitForLog,
  writeHostCrate,
  REPO,
} from "./harness.mjs";

/** Runs a command (bounded); rejects with its output when it fails. */
function run(file, args, options, ms) {
  return withTimeout(
    new Promise((resolve, reject) => {
      execFile(file, args, { maxBuffer: 64 << 20, ...options }, (error, stdout, stderr) => {
        if (error) reject(new Error(`${file} ${args.join(" ")} failed: ${error.message}\n${stderr}`));
        else resolve({ stdout, stderr });
      });
    }),
    ms,
    `${file} ${args.join(" ")}`,
  );
}

/** The tiny application's query, at `version`. */
const tinyFunctions = (greeting) => `//! A tiny application: one query.

use livebase_runtime::registry::Registry;
use livebase_schema::{Schema, Validator};

pub fn app() -> Registry {
    let mut app = Registry::new(Schema::new());
    let no_args: [(&str, Validator); 0] = [];
    app.query("greeting:get", no_args, |_ctx, _args| Ok(String::from("${greeting}")));
    app
}
`;

/** Writes the tiny application's crate into `dir`. */
async function writeTinyApp(dir) {
  await mkdir(path.join(dir, "functions", "src"), { recursive: true });
  await writeHostCrate(dir, "tiny-app");
  await writeFile(
    path.join(dir, "functions", "Cargo.toml"),
    `[package]
name = "livebase-functions"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
livebase-schema = { path = "${REPO}/schema" }
livebase-runtime = { path = "${REPO}/runtime" }
`,
  );
  await writeFile(path.join(dir, "functions", "src", "lib.rs"), tinyFunctions("hello, version 1"));
}

test(
  "editing a tiny app's query rebuilds it with cargo and the new result reaches the client; a compile error leaves it serving",
  { timeout: 120_000 },
  async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "livebase-tiny-app-"));
    const targetDir = process.env.CARGO_TARGET_DIR
      ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
      : path.join(REPO, "target");
    const env = { ...process.env, CARGO_TARGET_DIR: targetDir };
    let server;
    let clients;
    try {
      await writeTinyApp(dir);
      const started = Date.now();
      await run("cargo", ["build", "--bin", "tiny-app"], { cwd: dir, env }, 110_000);
      console.log(`the tiny app's first build took ${Math.round((Date.now() - started) / 1000)} s`);

      server = await startServer({
        command: "dev",
        bin: path.join(targetDir, "debug", "tiny-app"),
        cwd: dir,
        env: { CARGO_TARGET_DIR: targetDir, LIVEBASE_BUILD: undefined, LIVEBASE_DEV_BIN: undefined },
      });
      clients = new Clients(server.url);
      const client = await clients.ws();
      const live = new Live(client, api.greeting.get, {});
      await live.waitForValue((v) => v === "hello, version 1", "the first build's greeting");

      // An edit of the query's source: cargo rebuilds, the server restarts.
      await writeFile(
        path.join(dir, "functions", "src", "lib.rs"),
        tinyFunctions("hello, version 2"),
      );
      await live.waitForValue(
        (v) => v === "hello, version 2",
        "the edited query's result, with no action on the client's side",
        300_000,
      );
      assert.equal((await devBuildStatus(server.url)).status, "ok");

      // A compile error: reported, and the running server keeps serving.
      await writeFile(
        path.join(dir, "functions", "src", "lib.rs"),
        tinyFunctions("hello, version 3").replace("String::from", "String::frm"),
      );
      const failed = await waitForDevBuild(server.url, "failed", 300_000);
      assert.match(failed.output, /error\[E0599\]/, failed.output);
      assert.match(failed.output, /frm/);
      assert.equal(failed.command, "cargo build --bin tiny-app");
      await waitForLog(server, "the build failed", 1_000);
      assert.match(server.logs(), /error\[E0599\]/, "the compiler's output in the terminal");
      assert.equal(
        await ok(clients.http().query(api.greeting.get, {}), "greeting:get"),
        "hello, version 2",
        "the previous build still answers",
      );
      assert.equal(live.value, "hello, version 2");
      live.unsubscribe();
    } finally {
      try {
        await clients?.closeAll();
        await server?.stop();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
  },
);
