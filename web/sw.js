/*
 * sw.js: the service worker that makes the app work offline after the first visit.
 *
 * On install it precaches everything manifest.json lists under `precache` (app shell, Pyodide files, our
 * wheel) into a cache named after the build id, which build_site.py writes in place of the placeholder
 * below: a new build is a new service worker with a new cache, and activation deletes the old caches.
 * Requests are answered cache-first. Model files (.gguf) are left to the network: the page downloads them
 * with Range requests and keeps them in IndexedDB. manifest.json is network-first so the page learns about
 * a new build, with the cached copy as the offline fallback.
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

async function networkFirst(request) {
  const cache = await caches.open(CACHE_NAME);
  try {
    const response = await fetch(request, {cache: "no-store"});
    if (response.ok) await cache.put(MANIFEST, response.clone());
    return response;
  } catch (error) {
    const cached = await cache.match(MANIFEST);
    if (cached) return cached;
    throw error;
  }
}

self.addEventListener("install", (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(removeOldCaches().then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.endsWith(".gguf")) return;  // models: network (with Range), cached in IndexedDB by the page
  if (url.pathname.endsWith("/" + MANIFEST)) {
    event.respondWith(networkFirst(request));
    return;
  }
  event.respondWith(cacheFirst(request));
});
