/*
 * sw.js: the service worker that makes the app work offline after the first visit.
 *
 * On install it precaches everything manifest.json lists under `precache` (app shell, Pyodide files, our
 * wheel), each checked against the sha256 manifest.json lists for it (a mismatch fails the install and the
 * old worker stays), and manifest.json itself into a cache named after the build id, which build_site.py writes in place
 * of the placeholder below: a new build is a new service worker with a new cache. A new worker does not take
 * over on its own: it waits until the page (app_update.js) posts {type: "skipWaiting"}, which the page does
 * only when the user reloads and no answer is being written. Its activation, which comes only after its
 * install (the whole precache) succeeded, deletes the old app caches; the models, in IndexedDB, are never
 * touched. Requests are answered cache-first from this build's cache, manifest.json too, so a page always
 * runs one build's files. Model files (.gguf) are left to the network: the page downloads them with Range
 * requests and keeps them in IndexedDB. So are requests to the model origins the deploy lists (MODEL_ORIGINS,
 * written by build_site.py --model-origin, matched by model_origins.js); a request to any other origin is
 * refused here, so the site's connect-src holds for the page's workers too on a host that sends no policy header
 * (the <meta> copy covers the page alone).
 *
 * Every response it serves carries the cross-origin isolation headers (COOP, COEP, CORP) whether or not the
 * host sent them: the workers that split each token need an isolated page (web/worker_pool.js). On a host
 * that sends none, the first visit therefore runs one worker and every load after it the full pool.
 */
"use strict";

const BUILD_ID = "__BUILD_ID__";
const CACHE_PREFIX = "pychat-shell-";
const CACHE_NAME = CACHE_PREFIX + BUILD_ID;
const MANIFEST = "manifest.json";
const MODEL_ORIGINS = [/* __MODEL_ORIGINS__ */];  // build_site.py lists the --model-origin values here

importScripts("model_origins.js");  // Pychat.ModelOrigins, the page's own matcher

const ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                           "Cross-Origin-Resource-Policy": "same-origin"};

/* The response with the isolation headers it lacks. The body is read whole: a body streamed through the
 * service worker would keep it busy until the page reads it to the end, and a busy worker holds back a
 * waiting new version (app_update.js) until the browser times the request out. */
async function isolated(response) {
  const missing = Object.entries(ISOLATION_HEADERS).filter(([name]) => !response.headers.has(name));
  if (!missing.length || response.type === "opaque" || response.type === "opaqueredirect") return response;
  const headers = new Headers(response.headers);
  for (const [name, value] of missing) headers.set(name, value);
  return new Response(await response.blob(), {status: response.status, statusText: response.statusText, headers});
}

async function fetchForCache(path) {
  const response = await fetch(new Request(path, {cache: "reload"}));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return isolated(response);
}

/* The file at `path` whose bytes have the sha256 manifest.json lists for it ("./" is index.html): a file of
 * another build (a proxy's stale copy, a half-finished deploy) or a damaged one fails the install. */
async function fetchChecked(manifest, path) {
  const response = await fetchForCache(path);
  const entry = manifest.files[path === "./" ? "index.html" : path];
  const digest = await crypto.subtle.digest("SHA-256", await response.clone().arrayBuffer());
  const sha256 = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  if (!entry || sha256 !== entry.sha256) {
    throw new Error(`${path}: its sha256 is not the one manifest.json lists for build ${manifest.build_id}`);
  }
  return response;
}

/* Everything the manifest lists, checked against its sha256 and with the isolation headers, into this build's
 * cache: all or nothing. */
async function precache() {
  const cache = await caches.open(CACHE_NAME);
  try {
    const manifestResponse = await fetchForCache(MANIFEST);
    const manifest = await manifestResponse.clone().json();
    const responses = await Promise.all(manifest.precache.map((path) => fetchChecked(manifest, path)));
    await Promise.all(manifest.precache.map((path, i) => cache.put(path, responses[i])));
    await cache.put(MANIFEST, manifestResponse);
  } catch (error) {
    await caches.delete(CACHE_NAME);  // a later install starts over
    throw error;
  }
}

async function removeOldCaches() {
  const names = await caches.keys();
  await Promise.all(names.filter((name) => name.startsWith(CACHE_PREFIX) && name !== CACHE_NAME)
    .map((name) => caches.delete(name)));
}

async function cacheFirst(request) {
  const cache = await caches.open(CACHE_NAME);
  const cached = await cache.match(request, {ignoreSearch: true});
  return cached || isolated(await fetch(request));  // the cache holds them with the isolation headers
}

self.addEventListener("install", (event) => {
  event.waitUntil(precache());  // a failed precache fails the install: the old worker and its cache stay
});

self.addEventListener("message", (event) => {
  if (event.data && event.data.type === "skipWaiting") self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(removeOldCaches().then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) {  // a model host the deploy lists: the network; anything else: refused
    if (!self.Pychat.ModelOrigins.allows(url, MODEL_ORIGINS)) event.respondWith(Response.error());
    return;
  }
  if (request.method !== "GET") return;
  if (url.pathname.endsWith(".gguf")) return;  // models: network (with Range), cached in IndexedDB by the page
  event.respondWith(cacheFirst(request));
});
