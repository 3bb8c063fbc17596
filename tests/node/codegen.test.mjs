// `livebase codegen`: the TypeScript it writes for the real application is
// type-checked with `tsc` against the pinned `convex` package — a file that
// uses the generated `api` correctly with `ConvexClient` must pass, and a file
// that misuses it (wrong argument type, missing argument, unknown function,
// wrong kind, a result's field misread …) must fail on exactly the lines
// that misuse it. The runtime
// value (`api.js`) must name the same functions the server serves.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile, readFile, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";

import { api, livebaseBin, startServer, Clients, newUser, ok } from "./harness.mjs";

const run = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const TSC = path.join(HERE, "node_modules/typescript/bin/tsc");
const TIMEOUT_MS = 90_000;

/** A consumer project: generated files in `convex/`, the test's
 * `node_modules` linked in so `convex/browser` and `convex/server` resolve. */
async function project() {
  const dir = await mkdtemp(path.join(tmpdir(), "livebase-codegen-"));
  await symlink(path.join(HERE, "node_modules"), path.join(dir, "node_modules"), "dir");
  await writeFile(path.join(dir, "package.json"), '{ "type": "module" }\n');
  const out = path.join(dir, "convex");
  const { stdout } = await run(livebaseBin(), ["codegen", "--out", out], { timeout: TIMEOUT_MS });
  assert.match(stdout, /wrote .*api\.d\.ts/);
  assert.match(stdout, /wrote .*api\.js/);
  return dir;
}

/** Runs `tsc --noEmit` (strict, as a Vite or Next app would) on `file` and
 * the generated declarations it imports; returns `{ code, errors }` with each
 * error as `file(line,col): error TS…`. */
async function typeCheck(dir, file) {
  const config = {
    compilerOptions: {
      noEmit: true,
      strict: true,
      target: "es2022",
      module: "esnext",
      moduleResolution: "bundler",
      lib: ["es2022", "dom"],
      types: [],
    },
    files: [file],
  };
  const configFile = path.join(dir, `tsconfig.${file}.json`);
  await writeFile(configFile, JSON.stringify(config, null, 2));
  const args = [TSC, "--project", configFile];
  try {
    await run(process.execPath, args, { cwd: dir, timeout: TIMEOUT_MS });
    return { code: 0, errors: [] };
  } catch (e) {
    if (typeof e.code !== "number") throw e;
    const errors = e.stdout.split("\n").filter((line) => line.includes("error TS"));
    return { code: e.code, errors, output: e.stdout + e.stderr };
  }
}

const GOOD = `
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import type { FunctionArgs, FunctionReference, PaginationOptions, PaginationResult } from "convex/server";
// convex/react's \`PaginatedQueryReference\` (what \`usePaginatedQuery\` takes),
// spelled out: its module needs React's types, which this project lacks.
type PaginatedQueryReference = FunctionReference<"query", "public", { paginationOpts: PaginationOptions }, PaginationResult<any>>;
import { api, uploadFile, type Doc, type Id } from "./convex/api.js";

const client = new ConvexClient("http://127.0.0.1:3900", { skipConvexDeploymentUrlCheck: true });
const organizationId: string = "organizations_x";

// Convex's upload recipe: the id \`uploadFile\` answers is what \`setAvatar\` takes.
export async function uploadAvatar(file: Blob) {
  const postUrl: string = await client.mutation(api.files.generateUploadUrl, {});
  const storageId = await uploadFile(postUrl, file);
  await client.mutation(api.userProfiles.setAvatar, { storageId });
  const bytes: Id<"_storage"> = await uploadFile(postUrl, new Uint8Array([1, 2]), "image/png");
  console.log(bytes);
}

export async function useIt(todoId: Id<"todos">) {
  const todos = await client.query(api.todos.list, { organizationId });
  client.onUpdate(api.todos.list, { organizationId }, (value) => console.log(value, todos));
  await client.mutation(api.todos.create, { organizationId, text: "ship it" });
  await client.mutation(api.todos.toggle, { id: todoId });
  await client.query(api.organizations.listMine, {});
  await client.query(api.userProfiles.get, {});
  const http = new ConvexHttpClient("http://127.0.0.1:3900", { skipConvexDeploymentUrlCheck: true });
  await http.query(api.items.getAll, { organizationId });
  await http.query(api.organizations.listMine); // no arguments: they may be left out
  // A paginated query, typed as one: what \`usePaginatedQuery\` takes.
  const paginated: PaginatedQueryReference = api.items.list;
  console.log(paginated);
  const page = await http.query(api.items.list, {
    organizationId,
    paginationOpts: { numItems: 10, cursor: null },
  });
  const cursor: string = page.continueCursor;
  const done: boolean = page.isDone;
  console.log(cursor, done);
}

// Typed functions' results: documents with their fields, typed ids.
export async function useResults(organizationId: string) {
  const todos: Doc<"todos">[] = await client.query(api.todos.list, { organizationId });
  for (const todo of todos) {
    const text: string = todo.text;
    const completed: boolean = todo.completed;
    const created: number = todo._creationTime;
    const id: Id<"todos"> = todo._id;
    console.log(text, completed, created, todo.organizationId, todo.createdBy);
    const now: boolean = await client.mutation(api.todos.toggle, { id: todo._id });
    const gone: null = await client.mutation(api.todos.remove, { id });
    console.log(now, gone);
  }
  const created: Id<"todos"> = await client.mutation(api.todos.create, { organizationId, text: "t" });
  await client.mutation(api.todos.toggle, { id: created });
  const http = new ConvexHttpClient("http://127.0.0.1:3900", { skipConvexDeploymentUrlCheck: true });
  const page = await http.query(api.items.list, { organizationId, paginationOpts: { numItems: 5, cursor: null } });
  const names: string[] = page.page.map((item) => item.name + item.status);
  const itemId: Id<"items"> = await http.mutation(api.items.create, { organizationId, name: "n", status: "s" });
  await http.mutation(api.items.update, { id: page.page[0]?._id ?? itemId, name: "m" });
  const byStatus: Doc<"items">[] = await http.query(api.items.getByStatus, { organizationId, status: "s" });
  console.log(names, byStatus.length);
}

// The argument type is the validator's, visible to other code too.
const args: FunctionArgs<typeof api.todos.create> = { organizationId: "o", text: "t" };
export const text: string = args.text;
`;

// Each misuse on its own line, marked, so the test can require an error on
// every marked line and on no other.
const BAD = `
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import type { FunctionReference, PaginationOptions, PaginationResult } from "convex/server";
type PaginatedQueryReference = FunctionReference<"query", "public", { paginationOpts: PaginationOptions }, PaginationResult<any>>;
import { api, uploadFile, type Id } from "./convex/api.js";

const client = new ConvexClient("http://127.0.0.1:3900", { skipConvexDeploymentUrlCheck: true });
const http = new ConvexHttpClient("http://127.0.0.1:3900", { skipConvexDeploymentUrlCheck: true });

export async function misuse() {
  await client.query(api.todos.list, { organizationId: 42 }); // MISUSE wrong argument type
  await client.query(api.todos.list, {}); // MISUSE missing required argument
  await http.query(api.todos.list); // MISUSE arguments left out though required
  await client.query(api.todos.nope, { organizationId: "o" }); // MISUSE unknown function
  await client.query(api.nope.list, {}); // MISUSE unknown module
  await client.mutation(api.todos.list, { organizationId: "o" }); // MISUSE a query called as a mutation
  await client.mutation(api.todos.toggle, { id: "todos_plain_string" }); // MISUSE a string is not an Id
  await client.query(api.todos.list, { organizationId: "o", extra: 1 }); // MISUSE unknown argument
  await client.action(api.emails.send, { to: "a", template: "t", data: 1 }); // MISUSE internal function
  const notPaginated: PaginatedQueryReference = api.items.getAll; // MISUSE not a paginated query
  console.log(notPaginated);
  await http.query(api.items.list, { organizationId: "o", paginationOpts: { numItems: 10 } }); // MISUSE paginationOpts without cursor
  await uploadFile(42, new Blob([])); // MISUSE a number is not an upload URL
  await uploadFile("http://127.0.0.1:3900/api/storage/upload?token=t", "bytes"); // MISUSE a string is not a file
  const notATodo: Id<"todos"> = await uploadFile("u", new Blob([])); // MISUSE a stored file's id is not a todo's
  console.log(notATodo);
  await client.mutation(api.userProfiles.setAvatar, { storageId: "_storage_plain" }); // MISUSE a string is not a stored file's id
  const todos = await client.query(api.todos.list, { organizationId: "o" });
  const count: number = todos[0].text; // MISUSE a todo's text is a string
  console.log(todos[0].title); // MISUSE a todo has no title
  const itemId: Id<"items"> = todos[0]._id; // MISUSE a todo's id is not an item's
  await client.mutation(api.items.remove, { id: todos[0]._id }); // MISUSE an item function given a todo's id
  const page = await http.query(api.items.list, { organizationId: "o", paginationOpts: { numItems: 1, cursor: null } });
  const first: Doc<"todos"> = page.page[0]; // MISUSE an item is not a todo
  const toggled: string = await client.mutation(api.todos.toggle, { id: todos[0]._id }); // MISUSE toggle answers a boolean
  console.log(count, itemId, first, toggled);
}
`;

test("codegen's api types the real application's functions for the convex client", async () => {
  const dir = await project();
  try {
    const dts = await readFile(path.join(dir, "convex/api.d.ts"), "utf8");
    assert.match(dts, /THIS CODE IS AUTOMATICALLY GENERATED/);
    assert.match(dts, /livebase codegen --out/);
    assert.match(
      dts,
      /list: FunctionReference<"query", "public", \{ organizationId: string \}, Array<Doc<"todos">>>;/,
    );
    assert.match(dts, /export type Doc<TableName extends TableNames> = DataModel\[TableName\];/);
    assert.match(dts, /generateUploadUrl: FunctionReference<"mutation", "public", Record<string, never>, string>;/);
    assert.doesNotMatch(dts, /emails/, "internal functions are not in the api");

    await writeFile(path.join(dir, "good.ts"), GOOD);
    const good = await typeCheck(dir, "good.ts");
    assert.equal(good.code, 0, `tsc rejected correct use:\n${good.output}`);

    await writeFile(path.join(dir, "bad.ts"), BAD);
    const bad = await typeCheck(dir, "bad.ts");
    assert.notEqual(bad.code, 0, "tsc accepted misuse of the generated api");
    const marked = BAD.split("\n")
      .map((line, i) => (line.includes("// MISUSE") ? i + 1 : null))
      .filter((n) => n !== null);
    const failing = [
      ...new Set(bad.errors.map((e) => Number(/^[^(]*bad\.ts\((\d+),/.exec(e)?.[1]))),
    ].sort((a, b) => a - b);
    assert.deepEqual(
      failing,
      marked,
      `tsc must reject every misuse and nothing else:\n${bad.output}`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("codegen's api.js names the functions the server serves", async () => {
  const dir = await project();
  try {
    const { api } = await import(pathToFileURL(path.join(dir, "convex/api.js")).href);
    const { getFunctionName } = await import("convex/server");
    assert.equal(getFunctionName(api.todos.list), "todos:list");
    assert.equal(getFunctionName(api.organizations.listMine), "organizations:listMine");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("codegen's uploadFile uploads through a generated URL and answers the storageId", async () => {
  const dir = await project();
  const server = await startServer();
  const clients = new Clients(server.url);
  try {
    const { uploadFile } = await import(pathToFileURL(path.join(dir, "convex/api.js")).href);
    const ada = await newUser(server.url, "Ada");
    const http = clients.http(ada.token);
    await ok(http.mutation(api.userProfiles.upsert, { displayName: "Ada" }), "a profile");
    const postUrl = await ok(http.mutation(api.files.generateUploadUrl, {}), "an upload URL");
    const picture = new Blob([new Uint8Array([137, 80, 78, 71, 1, 2, 3])], { type: "image/png" });
    const storageId = await ok(uploadFile(postUrl, picture), "uploadFile");
    await ok(http.mutation(api.userProfiles.setAvatar, { storageId }), "setAvatar");
    const profile = await ok(http.query(api.userProfiles.get, {}), "the profile");
    const served = await fetch(profile.avatarUrl);
    assert.equal(served.headers.get("content-type"), "image/png", "the Blob's type was sent");
    assert.deepEqual(new Uint8Array(await served.arrayBuffer()), new Uint8Array([137, 80, 78, 71, 1, 2, 3]));
    // A used URL: the server's refusal, thrown with its status.
    await assert.rejects(uploadFile(postUrl, picture), (e) => e.status === 403 && e.message.length > 0);
  } finally {
    await clients.closeAll();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test("codegen output is deterministic", async () => {
  const a = await project();
  const b = await project();
  try {
    for (const file of ["convex/api.d.ts", "convex/api.js"]) {
      assert.equal(
        await readFile(path.join(a, file), "utf8"),
        await readFile(path.join(b, file), "utf8"),
        file,
      );
    }
  } finally {
    await rm(a, { recursive: true, force: true });
    await rm(b, { recursive: true, force: true });
  }
});
