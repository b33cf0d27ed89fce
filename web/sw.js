/*
 * sw.js: the service worker that makes the app work offline after the first visit.
 *
 * On install it precaches everything manifest.json lists under `precache` (app shell, Pyodide files, our
 * wheel) and manifest.json itself into a cache named after the build id, which build_site.py writes in place
 * of the placeholder below: a new build is a new service worker with a new cache. A new worker does not take
 * over on its own: it waits until the page (app_update.js) posts {type: "skipWaiting"}, which the page does
 * only when the user reloads and no answer is being written. Its activation, which comes only after its
 * install (the whole precache) succeeded, deletes the old app caches; the models, in IndexedDB, are never
 * touched. Requests are answered cache-first from this build's cache, manifest.json too, so a page always
 * runs one build's files. Model files (.gguf) are left to the network: the page downloads them with Range
 * requests and keeps them in IndexedDB.
 */
"use strict";

const BUILD_ID = "__BUILD_ID__";
const CACHE_PREFIX = "pychat-shell-";
const CACHE_NAME = CACHE_PREFIX + BUILD_ID;
const MANIFEST = "manifest.json";

async function precache() {
  const cache = await caches.open(CACHE_NAME);
  const response = await fetch(MANIFEST, {cache: "reload"});
  if (!response.ok) throw new Error(`${MANIFEST}: HTTP ${response.status}`);
  const manifest = await response.clone().json();
  await cache.addAll(manifest.precache.map((path) => new Request(path, {cache: "reload"})));
  await cache.put(MANIFEST, response);
}

async function removeOldCaches() {
  const names = await caches.keys();
  await Promise.all(names.filter((name) => name.startsWith(CACHE_PREFIX) && name !== CACHE_NAME)
    .map((name) => caches.delete(name)));
}

async function cacheFirst(request) {
  const cache = await caches.open(CACHE_NAME);
  const cached = await cache.match(request, {ignoreSearch: true});
  return cached || fetch(request);
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
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.endsWith(".gguf")) return;  // models: network (with Range), cached in IndexedDB by the page
  event.respondWith(cacheFirst(request));
});
