/*
 * tp_scaling.mjs: the terms of the scaling model of several workers per token (docs/browser.md, "Several workers
 * per token"), measured in Pyodide 0.27.7 under Node: workers are worker_threads, each with its own Pyodide,
 * summing through web/tensor_parallel.js over a SharedArrayBuffer as the page's workers do.
 *
 *     node bench/tp_scaling.mjs [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--tokens 16] [--alone 2 3 4]
 *                               [--together 2] [--unstacked] [--pyodide dist/site/pyodide] [--json out.json]
 *
 * 1. one worker: the greedy answer (the ids every later run is fed) and its time per token, split into the
 *    products, the collective calls and the rest;
 * 2. --alone N...: every rank of an N-way split run by itself (its sums do nothing), one after another in one
 *    thread: each rank's compute per token with no waiting, so the slowest rank's excess over the mean is the
 *    imbalance the others wait for (--unstacked: each rank also with q/k/v and gate/up multiplied separately,
 *    in turns with the stacked runs);
 * 3. --together N...: N threads with the real collective: time per token, time in the collective calls, the
 *    cost of one call when all arrive together (sums with nothing between them) and the greedy ids, which must
 *    equal the single worker's.
 * Prints a JSON summary. Needs the built site's Pyodide folder (python build/build_site.py) and node_modules.
 */
import fs from "node:fs";
import path from "node:path";
import vm from "node:vm";
import {fileURLToPath} from "node:url";
import {Worker, isMainThread, parentPort, workerData} from "node:worker_threads";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PROMPT = [1, 9690, 198, 2683, 314, 253, 5356, 30, 2, 198];  // a short chat-like prefix (SmolLM2 ids)
const GEMMA_PROMPT = [2, 818, 5279, 529, 7001, 563, 496, 1671, 236761, 107];

if (isMainThread) await main(); else await serve();

function option(args, name, fallback, many = false) {
  const at = args.indexOf("--" + name);
  if (at < 0) return fallback;
  const values = [];
  for (let i = at + 1; i < args.length && !args[i].startsWith("--"); i++) values.push(args[i]);
  return many ? values.map(Number) : values[0];
}

async function main() {
  const args = process.argv.slice(2);
  const model = path.resolve(option(args, "model", path.join(REPO, "models/SmolLM2-135M-Instruct.Q4_1.gguf")));
  const tokens = Number(option(args, "tokens", 16));
  const alone = option(args, "alone", [2, 3, 4], true), together = option(args, "together", [2], true);
  const compare = args.includes("--unstacked");
  const pyodide = path.resolve(option(args, "pyodide", path.join(REPO, "dist/site/pyodide")));
  const prompt = JSON.stringify(path.basename(model).startsWith("gemma") ? GEMMA_PROMPT : PROMPT);
  const report = {model: path.basename(model), tokens};

  const solo = await start({pyodide, model});
  report.one = JSON.parse(await solo.call("load", [fs.realpathSync(model), 1, 0]));
  const one = JSON.parse(await solo.call("decode", [prompt, "null", tokens]));
  report.one.per_token = summary(one.per_token);
  const feed = JSON.stringify(one.greedy.slice(0, -1));
  report.greedy = one.greedy;
  report.ops = JSON.parse(await solo.call("op_cost", [20000, "noop"]));
  report.alone = {};
  for (const n of alone) {
    report.alone[n] = [];
    for (let rank = 0; rank < n; rank++) {
      const shard = {};
      for (const stacked of compare ? [true, false, true, false] : [true]) {  // --unstacked: A/B in turns
        const key = stacked ? "per_token" : "per_token_unstacked";
        Object.assign(shard, JSON.parse(await solo.call("load", [fs.realpathSync(model), n, rank, null, stacked])));
        const run = summary(JSON.parse(await solo.call("decode", [prompt, feed, 0])).per_token);
        shard[key] = shard[key] ? [].concat(shard[key], run) : run;
      }
      report.alone[n].push(shard);
    }
  }
  await solo.close();

  report.together = {};
  for (const n of together) {
    const shared = new SharedArrayBuffer(sharedBytes(n));
    const workers = await Promise.all(Array.from({length: n}, () => start({pyodide, model, shared, workers: n})));
    await Promise.all(workers.map((w, rank) => w.call("load", [fs.realpathSync(model), n, rank, "js"])));
    const runs = await Promise.all(workers.map((w) => w.call("decode", [prompt, feed, 0])));
    const costs = await Promise.all(workers.map((w) => w.call("call_cost", [2000])));
    report.together[n] = runs.map((r, rank) => {
      const run = JSON.parse(r);
      return {per_token: summary(run.per_token), call: JSON.parse(costs[rank]),
              same_ids_as_one_worker: JSON.stringify(run.greedy) === JSON.stringify(one.greedy)};
    });
    await Promise.all(workers.map((w) => w.close()));
  }
  const text = JSON.stringify(report, null, 1);
  if (option(args, "json")) fs.writeFileSync(option(args, "json"), text);
  console.log(text);
}

/* Milliseconds per token of [total, products, collective, gc] rows, the first token left out (warm-up): the
 * median token, the fastest (the least disturbed by other processes on a busy machine), and the mean of the
 * cycle collector's pauses. */
function summary(rows) {
  const kept = (rows.length > 1 ? rows.slice(1) : rows).slice().sort((a, b) => a[0] - b[0]);
  const terms = ([total, products, collective]) => ({
    total_ms: +total.toFixed(2), products_ms: +products.toFixed(2), collective_ms: +collective.toFixed(2),
    rest_ms: +(total - products - collective).toFixed(2)});
  const gc = kept.reduce((sum, row) => sum + row[3], 0) / kept.length;
  return {median: terms(kept[kept.length >> 1]), best: terms(kept[0]), gc_mean_ms: +gc.toFixed(3)};
}

function sharedBytes(workers) {
  const context = {self: {}};
  vm.runInNewContext(fs.readFileSync(path.join(REPO, "web/tensor_parallel.js"), "utf8"), context);
  return context.self.Pychat.TensorParallel.sharedBytes(workers);
}

/* A worker thread with its own Pyodide; call(fn, args) runs tp_profile.fn(*args) there. */
async function start(data) {
  const worker = new Worker(fileURLToPath(import.meta.url), {workerData: data});
  const pending = new Map();
  let next = 0;
  worker.on("message", ({id, result, error}) => {
    const {resolve, reject} = pending.get(id);
    pending.delete(id);
    if (error) reject(new Error(error)); else resolve(result);
  });
  worker.on("error", (error) => { for (const {reject} of pending.values()) reject(error); });
  const call = (fn, args) => new Promise((resolve, reject) => {
    pending.set(next, {resolve, reject});
    worker.postMessage({id: next++, fn, args});
  });
  await call("ready", []);
  return {call, close: () => worker.terminate()};
}

async function serve() {
  const {pyodide: indexURL, model, shared, workers} = workerData;
  const {loadPyodide} = await import(path.join(REPO, "node_modules/pyodide/pyodide.mjs"));
  const py = await loadPyodide({indexURL: indexURL + "/", stdout: () => {}, stderr: () => {}});
  await py.loadPackage(["numpy", ...fs.readdirSync(path.join(indexURL, "../wheels"))
    .filter((name) => !name.startsWith("pychat_wasm")).map((name) => path.join(indexURL, "../wheels", name))]);
  for (const [at, root] of [["/repo", REPO], ["/models", path.dirname(fs.realpathSync(model))]]) {
    py.FS.mkdirTree(at);
    py.FS.mount(py.FS.filesystems.NODEFS, {root}, at);
  }
  py.runPython("import sys; sys.path[:0] = ['/repo', '/repo/bench']");
  const profile = py.pyimport("tp_profile");
  globalThis.self = globalThis;
  vm.runInThisContext(fs.readFileSync(path.join(REPO, "web/tensor_parallel.js"), "utf8"));
  const noop = () => 0;
  parentPort.on("message", ({id, fn, args}) => {
    try {
      let result = null;
      if (fn !== "ready") {
        if (fn === "load") {
          args[0] = "/models/" + path.basename(args[0]);
          if (args[3] === "js") {
            const heap = () => py._module.HEAPF32;
            args[3] = self.Pychat.TensorParallel.collective({shared, rank: args[2], workers, heap});
          }
        }
        if (fn === "op_cost") args[1] = noop;
        result = profile[fn](...args);
      }
      parentPort.postMessage({id, result});
    } catch (error) {
      parentPort.postMessage({id, error: String((error && error.stack) || error)});
    }
  });
}
