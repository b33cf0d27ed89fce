/*
 * Load the page's classic scripts (web/*.js, each one IIFE over `self.Pychat`) into a fresh V8 context whose
 * `self` is its global object, as in a browser window or worker, and return that global: its Pychat namespace
 * holds what the scripts export. Browser globals the scripts need are given in `globals` (fetch, navigator, ...).
 *
 *     const page = loadWebScripts(["model_store.js", "model_download.js"], {fetch, navigator: {}});
 *     await page.Pychat.downloadModel(...);
 *
 * Objects made inside the context belong to its realm (its own Object, Array, TypeError): compare them as
 * plain(...) data, and make errors the scripts must recognise with page.TypeError.
 */
import {readFileSync} from "node:fs";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import vm from "node:vm";

export const WEB = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "web");

export function loadWebScripts(names, globals = {}) {
  const context = vm.createContext({
    console, crypto, Blob, TextDecoder, TextEncoder, AbortController, setTimeout, clearTimeout, performance,
    ...globals,
  });
  context.self = context;
  context.TypeError = vm.runInContext("TypeError", context);  // the realm's own, for errors the scripts check
  for (const name of names) {
    vm.runInContext(readFileSync(join(WEB, name), "utf8"), context, {filename: join(WEB, name)});
  }
  return context;
}

/* A value of another realm as this realm's plain data (for deepStrictEqual). */
export const plain = (value) => JSON.parse(JSON.stringify(value));
