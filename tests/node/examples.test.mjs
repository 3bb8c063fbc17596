// The examples of `examples/`, run as their users would: `todo-terminal`
// (the Rust SDK) watching an organization's todos while other processes add
// and toggle them.
//
// Needs the release build of the example next to the server's binary
// (`cargo build --release -p todo-terminal`), or `$TODO_TERMINAL_BIN`.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { access } from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import path from "node:path";

import { startServer, livebaseBin, unique, withTimeout } from "./harness.mjs";

const TODO_TERMINAL = process.env.TODO_TERMINAL_BIN
  ? path.resolve(process.env.TODO_TERMINAL_BIN)
  : path.join(path.dirname(livebaseBin()), "todo-terminal");
const RUN_MS = 30_000;

let server;
const children = new Set();

before(async () => {
  try {
    await access(TODO_TERMINAL, fsConstants.X_OK);
  } catch {
    throw new Error(
      `todo-terminal not found at ${TODO_TERMINAL}: build it with ` +
        "`cargo build --release -p todo-terminal` or set TODO_TERMINAL_BIN",
    );
  }
  server = await startServer();
});

after(async () => {
  for (const child of children) child.kill("SIGKILL");
  await server?.stop();
});

/** Starts `todo-terminal ARGS`; `output()` is what it printed so far,
 * `waitFor(re)` waits (bounded) until stdout matches, `done` its exit. */
function start(args) {
  const child = spawn(TODO_TERMINAL, ["--url", server.url, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let stdout = "";
  let stderr = "";
  const waiters = new Set();
  child.stdout.on("data", (chunk) => {
    stdout += chunk.toString("utf8");
    for (const w of [...waiters]) w();
  });
  child.stderr.on("data", (chunk) => (stderr += chunk.toString("utf8")));
  const done = new Promise((resolve) =>
    child.on("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  const describe = () => `todo-terminal ${args.join(" ")}\nstdout:\n${stdout}\nstderr:\n${stderr}`;
  return {
    output: () => stdout,
    done: withTimeout(done, RUN_MS, () => `${describe()}\n(did not exit)`),
    waitFor: (re) =>
      withTimeout(
        new Promise((resolve) => {
          const check = () => {
            if (re.test(stdout)) {
              waiters.delete(check);
              resolve(stdout);
            }
          };
          waiters.add(check);
          check();
        }),
        RUN_MS,
        () => `${describe()}\n(waiting for ${re})`,
      ),
  };
}

/** Runs `todo-terminal ARGS` to its end; asserts it succeeded. */
async function run(args) {
  const result = await start(args).done;
  assert.equal(result.code, 0, `todo-terminal ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

test("todo-terminal watch shows the list live as other processes add and toggle", async () => {
  const email = `${unique("ada")}@example.com`;
  const user = ["--email", email, "--password", "correct horse battery", "--org", unique("acme")];

  // The first run signs the user up and creates the organization.
  const added = await run([...user, "add", "buy milk"]);
  const firstId = /added (\S+)/.exec(added)?.[1];
  assert.ok(firstId, `add prints the new id: ${added}`);

  // Three lists: now, after the add, after the toggle.
  const watcher = start([...user, "watch", "--updates", "3"]);
  await watcher.waitFor(/--- 1 todos ---\n\[ \] buy milk/);

  await run([...user, "add", "ship the example"]);
  await watcher.waitFor(/--- 2 todos ---/);
  await run([...user, "toggle", firstId]);

  const { code, stdout, stderr } = await watcher.done;
  assert.equal(code, 0, `the watcher exits after --updates 3:\n${stderr}`);
  const lists = stdout.split(/^(?=--- )/m);
  assert.equal(lists.length, 3, `three lists printed:\n${stdout}`);
  assert.match(lists[0], /^--- 1 todos ---\n\[ \] buy milk/);
  // Newest first.
  assert.match(lists[1], /^--- 2 todos ---\n\[ \] ship the example .*\n\[ \] buy milk /);
  assert.match(lists[2], /^--- 2 todos ---\n\[ \] ship the example .*\n\[x\] buy milk /);
});

test("todo-terminal reports a wrong password with the server's message", async () => {
  const email = `${unique("bob")}@example.com`;
  await run(["--email", email, "--password", "correct horse battery", "add", "one"]);
  const result = await start(["--email", email, "--password", "wrong password!", "watch"]).done;
  assert.equal(result.code, 1, result.stdout);
  assert.match(result.stderr, /sign-in: invalid email or password/);
});
