/*
 * web/model_download.js's decisions (Pychat.downloadModel), against a fake server that answers Range and
 * If-Range as RFC 9110 says (15.3.7 206 Partial Content with Content-Range "bytes first-last/complete",
 * 14.4 Content-Range, 13.1.5 If-Range, 15.5.17 416 with "bytes *" + "/complete") and fails as a test plans it.
 * Every download must end with exactly the server's bytes in the store (ModelStore's in-memory twin, from
 * web/model_store.js) or with a typed error; the requests it made are the other half of each check.
 */
import assert from "node:assert/strict";
import {createHash} from "node:crypto";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

const ETAG = '"v1"';

/* A GGUF-looking file of n bytes whose every stretch differs. */
function modelFile(n, seed = 1) {
  const bytes = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) bytes[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  bytes.set(new TextEncoder().encode("GGUF"));
  return bytes;
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/*
 * A server of `file` (Uint8Array) at any URL. `plan` is one entry per request, in order (then plain answers):
 *   {status}               that status, no body
 *   {dropAfter}            the body breaks after that many bytes (a network error)
 *   {ignoreRange}          200 with the whole file
 *   {noLength}             no Content-Length (nor Content-Range): the size is unknown until the body ends
 *   {startAt}              206 whose Content-Range starts there instead of where asked
 *   {replaceWith}          the file changes (new bytes, new ETag unless sameValidator) before this answer
 *   {body, headers}        that body and those headers, as they are
 *   {linked}               these headers besides (X-Linked-Etag, X-Linked-Size: what Hugging Face states)
 * It records every request's Range and If-Range in `requests`.
 */
function fakeServer(page, file, plan = []) {
  const server = {file, etag: ETAG, requests: []};
  server.fetch = async (url, {headers}) => {
    const step = plan.shift() || {};
    server.requests.push({range: headers.Range, ifRange: headers["If-Range"] || null});
    if (step.replaceWith) Object.assign(server, {file: step.replaceWith, etag: step.sameValidator ? server.etag : '"v2"'});
    if (step.status) return new Response(null, {status: step.status});
    if (step.body) return new Response(step.body, {status: 200, headers: step.headers});
    const size = server.file.length;
    const asked = Number(/^bytes=(\d+)-$/.exec(headers.Range)[1]);
    const validatorMatches = !headers["If-Range"] || headers["If-Range"] === server.etag;
    const partial = !step.ignoreRange && validatorMatches;
    if (partial && asked >= size) {
      return new Response(null, {status: 416, headers: {"Content-Range": `bytes */${size}`}});
    }
    const start = partial ? (step.startAt ?? asked) : 0;
    let body = server.file.slice(start);
    const responseHeaders = {ETag: server.etag, ...step.linked};
    if (!step.noLength) responseHeaders["Content-Length"] = String(body.length);
    if (partial && !step.noLength) responseHeaders["Content-Range"] = `bytes ${start}-${size - 1}/${size}`;
    if (step.dropAfter !== undefined) body = brokenAfter(page, body, step.dropAfter);
    return new Response(body, {status: partial ? 206 : 200, headers: responseHeaders});
  };
  return server;
}

/* A body stream that delivers `n` bytes of `bytes` and then fails as a dropped connection does in fetch. */
function brokenAfter(page, bytes, n) {
  let sent = false;
  return new ReadableStream({
    pull(controller) {  // the bytes are read first (an error would discard queued ones), then the break
      if (sent) controller.error(new page.TypeError("network error"));
      else controller.enqueue(bytes.slice(0, n));
      sent = true;
    },
  });
}

/* Pychat.downloadModel of `file` served by fakeServer(plan), into the in-memory store (there is no indexedDB
 * here): what it returned or threw, its notices, the requests and the record it left. */
async function download(file, plan, specExtra = {}, checkStart = null) {
  const page = loadWebScripts(["util.js", "model_store.js", "host_checksum.js", "model_download.js"],
                              {navigator: {}, location: {href: "http://host/"}, URL});
  const server = fakeServer(page, file, plan);
  page.fetch = async (url, init = {}) => {  // a Hugging Face resolve URL's raw/ twin answers with `pointer`
    if (url.includes("/raw/")) {
      server.pointerRequests = [...(server.pointerRequests || []), url];
      return specExtra.pointer ? new Response(specExtra.pointer) : new Response("Entry not found", {status: 404});
    }
    return server.fetch(url, init);
  };
  const store = await page.Pychat.ModelStore.openOrKeepInMemory();  // no indexedDB here: the in-memory store
  const notices = [];
  const spec = {id: "url/model.gguf", name: "model.gguf", url: "http://host/model.gguf", ...specExtra};
  delete spec.pointer;
  const settings = {onNotice: (text) => notices.push(text), checkStart,
                    options: {retries: 2, retry_delay_ms: 0, stall_seconds: 30}};
  let bytes = null, error = null;
  try {
    bytes = new Uint8Array(await page.Pychat.downloadModel(store, spec, settings));
  } catch (caught) {
    error = caught;
  }
  const record = await store.get(spec.id);
  return {bytes, error, notices, requests: server.requests, record: record && plain(record), server, store,
          check: record ? page.Pychat.HostChecksum.describe(record) : null};
}

const ranges = (requests) => requests.map((r) => r.range);

test("a download asks from byte 0 and stores the file, checked against its sha256", async () => {
  const file = modelFile(3000);
  const {bytes, error, requests, record} = await download(file, [], {size: file.length, sha256: sha256(file)});
  assert.equal(error, null);
  assert.deepEqual(bytes, file);
  assert.deepEqual(plain(requests), [{range: "bytes=0-", ifRange: null}]);
  assert.equal(record.complete, true);
});

test("a dropped connection resumes from the stored bytes, guarded by If-Range", async () => {
  const file = modelFile(5000);
  const {bytes, notices, requests} = await download(file, [{dropAfter: 1200}, {dropAfter: 700}]);
  assert.deepEqual(bytes, file);
  assert.deepEqual(plain(requests), [{range: "bytes=0-", ifRange: null}, {range: "bytes=1200-", ifRange: ETAG},
                                     {range: "bytes=1900-", ifRange: ETAG}]);
  assert.deepEqual(notices, ["Download interrupted at 1.2 kB (network error); resuming…",
                             "Download interrupted at 1.9 kB (network error); resuming…"]);
});

test("a Content-Range that starts elsewhere than asked is not spliced in", async () => {
  const file = modelFile(4000);
  const {bytes, notices, requests} = await download(file, [{dropAfter: 1000}, {startAt: 900}]);
  assert.deepEqual(bytes, file);
  assert.deepEqual(ranges(requests), ["bytes=0-", "bytes=1000-", "bytes=1000-"]);
  assert.ok(notices.includes("Download interrupted at 1.0 kB (the server sent bytes from 900 instead of 1000); resuming…"),
            notices.join("\n"));
});

test("the file's size comes from Content-Range, not Content-Length", async () => {
  const file = modelFile(4000);
  // the second answer's Content-Length is what is left (3000), the whole file is in Content-Range (4000)
  const {bytes, record} = await download(file, [{dropAfter: 1000}]);
  assert.deepEqual(bytes, file);
  assert.equal(record.size, 4000);
});

test("a server that ignores Range makes the download restart from byte 0", async () => {
  const file = modelFile(3000);
  const {bytes, notices, requests} = await download(file, [{dropAfter: 1000}, {ignoreRange: true}]);
  assert.deepEqual(bytes, file);
  assert.deepEqual(ranges(requests), ["bytes=0-", "bytes=1000-"]);
  assert.ok(notices.includes("The server does not support resuming; downloading from the start."), notices.join("\n"));
});

test("a file that changed on the server is downloaded again whole, never spliced", async () => {
  const file = modelFile(3000, 1), changed = modelFile(3000, 2);
  const {bytes, notices, requests} = await download(file, [{dropAfter: 1000}, {replaceWith: changed}]);
  assert.deepEqual(bytes, changed);  // If-Range did not match: 200 with the new file
  assert.deepEqual(plain(requests), [{range: "bytes=0-", ifRange: null}, {range: "bytes=1000-", ifRange: ETAG}]);
  assert.ok(notices.some((n) => n.startsWith("model.gguf changed on the server since the download began")), notices.join("\n"));
});

test("5xx answers are retried from where the bytes end; other errors are not", async () => {
  const file = modelFile(2000);
  const retried = await download(file, [{status: 503}, {dropAfter: 500}, {status: 502}]);
  assert.deepEqual(retried.bytes, file);
  assert.deepEqual(ranges(retried.requests), ["bytes=0-", "bytes=0-", "bytes=500-", "bytes=500-"]);

  const missing = await download(file, [{status: 404}]);
  assert.equal(missing.error.name, "ModelStoreError");
  assert.equal(missing.error.kind, "network");
  assert.equal(missing.error.message, "Downloading model.gguf failed: HTTP 404 from http://host/model.gguf");
  assert.equal(missing.requests.length, 1);
});

test("a server that keeps failing stops the download, which resumes later from its bytes", async () => {
  const file = modelFile(2000);
  const failed = await download(file, [{dropAfter: 800}, {status: 503}, {status: 503}, {status: 503}]);
  assert.equal(failed.error.kind, "network");
  assert.match(failed.error.message, /^The download of model\.gguf stopped at 800 B \(HTTP 503 .*\)\. It will resume/);
  assert.deepEqual([failed.record.received, failed.record.complete], [800, false]);
});

test("a download whose first bytes checkStart refuses stops there and keeps nothing", async () => {
  // the page asks Python whether the first bytes are a GGUF model (models.js); here a check that says no
  const html = new TextEncoder().encode("<!doctype html><html><body>Not found</body></html>");
  const seen = [];
  const refuse = (bytes, size) => {
    seen.push([new TextDecoder().decode(bytes).slice(0, 9), size]);
    throw new Error("model.gguf is not a GGUF model");
  };
  const {error, record, requests} = await download(modelFile(10), [{body: html, headers: {"Content-Type": "text/html"}}],
                                                   {}, refuse);
  assert.equal(error.message, "model.gguf is not a GGUF model");
  assert.deepEqual(seen, [["<!doctype", 0]]);  // the first bytes, and no size announced
  assert.equal(record, undefined);
  assert.equal(requests.length, 1);
});

test("a size other than the expected one is a mismatch, reported before the body is read", async () => {
  const file = modelFile(3000);
  const {error} = await download(file, [], {size: 2500});
  assert.equal(error.kind, "mismatch");
  assert.equal(error.message, "The server's model.gguf has 3.0 kB, expected 2.5 kB.");
});

test("416 for bytes=N- completes a download of unknown size when all N bytes are stored", async () => {
  const file = modelFile(2000);
  // no length announced, and the connection breaks after the last byte: only a 416 can tell it is complete
  const {bytes, requests, record} = await download(file, [{ignoreRange: true, noLength: true, dropAfter: 2000}]);
  assert.deepEqual(bytes, file);
  assert.deepEqual(plain(requests), [{range: "bytes=0-", ifRange: null}, {range: "bytes=2000-", ifRange: ETAG}]);
  assert.deepEqual([record.size, record.complete], [2000, true]);
});

test("416 because the file shrank on the server restarts the download from byte 0", async () => {
  const file = modelFile(3000, 1), shorter = modelFile(1500, 2);
  const {bytes, notices, requests} = await download(file, [
    {ignoreRange: true, noLength: true, dropAfter: 2000},
    {replaceWith: shorter, sameValidator: true},
  ]);
  assert.deepEqual(bytes, shorter);
  assert.deepEqual(ranges(requests), ["bytes=0-", "bytes=2000-", "bytes=0-"]);
  assert.ok(notices.includes("model.gguf changed on the server; downloading it again from the start."), notices.join("\n"));
});

// ---- the host's sha256 (Hugging Face's LFS pointer, X-Linked-Etag) when the catalog states none ---------------------------

/* The headers Hugging Face sends with an LFS file: its sha256 as a quoted ETag, and its size. */
const linked = (bytes) => ({"X-Linked-Etag": `"${sha256(bytes)}"`, "X-Linked-Size": String(bytes.length)});

test("without a stated sha256 the host's X-Linked-Etag is checked, and the record says so", async () => {
  const file = modelFile(3000);
  const {bytes, error, record, check} = await download(file, [{linked: linked(file)}]);
  assert.equal(error, null);
  assert.deepEqual(bytes, file);
  assert.deepEqual([record.sha256, record.sha256From, record.complete], [sha256(file), "X-Linked-Etag", true]);
  assert.equal(check, "verified (sha256 from the host's X-Linked-Etag)");
});

test("bytes that are not the file the host's X-Linked-Etag names are refused and deleted", async () => {
  const file = modelFile(3000, 1), other = modelFile(3000, 2);
  const {bytes, error, record} = await download(file, [{linked: linked(other)}]);
  assert.equal(bytes, null);
  assert.equal(error.name, "ModelStoreError");
  assert.equal(error.kind, "corrupt");  // models.js downloads it once more, then gives up with this message
  assert.equal(error.message, "The received model.gguf is not the file its host states: its sha256 is not " +
                              `${sha256(other)} (the host's X-Linked-Etag); it was deleted.`);
  assert.equal(record, undefined);
});

test("an X-Linked-Size other than the bytes announced is a mismatch before the body is read", async () => {
  const file = modelFile(3000);
  const {error, requests} = await download(file, [{linked: {...linked(file), "X-Linked-Size": "2500"}}]);
  assert.equal(error.kind, "mismatch");
  assert.equal(error.message, "The server's model.gguf has 3.0 kB, expected 2.5 kB.");
  assert.equal(requests.length, 1);
});

test("the catalog's sha256 comes first; a host that states none, or no sha256, leaves the download unverified",
     async () => {
  const file = modelFile(3000), other = modelFile(3000, 2);
  const stated = await download(file, [{linked: linked(other)}], {sha256: sha256(file)});
  assert.deepEqual(stated.bytes, file);
  assert.deepEqual([stated.record.sha256From, stated.check], ["stated", "verified (sha256)"]);
  for (const headers of [{}, {"X-Linked-Etag": '"0123456789abcdef0123456789abcdef01234567"'}]) {  // a git sha1
    const {bytes, record, check} = await download(file, [{linked: headers}]);
    assert.deepEqual(bytes, file);
    assert.deepEqual([record.sha256, record.sha256From], [sha256(file), ""]);  // computed, not checked
    assert.equal(check, "not verified (no sha256 from the catalog or the host)");
  }
});

test("a file that changed on the server is checked against what the host states of the new one", async () => {
  const file = modelFile(3000, 1), changed = modelFile(3000, 2);
  const {bytes, record} = await download(file, [{dropAfter: 1000, linked: linked(file)},
                                                {replaceWith: changed, linked: linked(changed)}]);
  assert.deepEqual(bytes, changed);
  assert.deepEqual([record.sha256, record.sha256From], [sha256(changed), "X-Linked-Etag"]);
});

/* A Git LFS pointer as Hugging Face's raw/ URLs answer it (https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md). */
const pointerOf = (bytes) => `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(bytes)}\nsize ${bytes.length}\n`;
const RESOLVE_URL = "https://hf.test/org/repo/resolve/main/model.gguf";

test("a resolve URL's LFS pointer (its raw/ twin) states the sha256 and size the download is checked against",
     async () => {
  const file = modelFile(3000), other = modelFile(3000, 2);
  const good = await download(file, [], {url: RESOLVE_URL, pointer: pointerOf(file)});
  assert.deepEqual(good.bytes, file);
  assert.deepEqual(good.server.pointerRequests, ["https://hf.test/org/repo/raw/main/model.gguf"]);
  assert.deepEqual([good.record.sha256, good.record.sha256From], [sha256(file), "LFS pointer"]);
  assert.equal(good.check, "verified (sha256 from the host's LFS pointer)");

  const bad = await download(file, [], {url: RESOLVE_URL, pointer: pointerOf(other)});
  assert.equal(bad.error.kind, "corrupt");
  assert.equal(bad.error.message, "The received model.gguf is not the file its host states: its sha256 is not " +
                                  `${sha256(other)} (the host's LFS pointer); it was deleted.`);
  assert.equal(bad.record, undefined);

  const missing = await download(file, [], {url: RESOLVE_URL});  // 404: no pointer, so unchecked
  assert.deepEqual(missing.bytes, file);
  assert.equal(missing.check, "not verified (no sha256 from the catalog or the host)");
  const plain = await download(file, []);  // no resolve URL: no pointer asked for
  assert.equal(plain.server.pointerRequests, undefined);
});

test("parsePointer reads a Git LFS pointer and nothing else", () => {
  const page = loadWebScripts(["host_checksum.js"], {location: {href: "http://host/"}, URL});
  const {parsePointer, pointerURL} = page.Pychat.HostChecksum;
  const file = modelFile(10);
  assert.deepEqual(plain(parsePointer(pointerOf(file))), {sha256: sha256(file), size: 10, from: "LFS pointer"});
  assert.equal(parsePointer("GGUF\u0003..."), null);
  assert.equal(parsePointer("version https://git-lfs.github.com/spec/v1\noid sha1:abc\nsize 3\n"), null);
  assert.equal(pointerURL("https://huggingface.co/Qwen/Qwen3-0.6B-GGUF/resolve/main/Qwen3-0.6B-Q8_0.gguf"),
               "https://huggingface.co/Qwen/Qwen3-0.6B-GGUF/raw/main/Qwen3-0.6B-Q8_0.gguf");
  assert.equal(pointerURL("models/SmolLM2-135M-Instruct.Q4_1.gguf"), null);
});
