/*
 * model_origins.js: where a model may be downloaded from. The page's own origin, and the other origins its deploy
 * lists (build_site.py --model-origin: manifest.json "model_origins", the Content-Security-Policy's connect-src,
 * sw.js's MODEL_ORIGINS), each matched as the policy matches a source: the scheme, the host (a "*." prefix
 * covers every subdomain, as in "https://*.hf.co") and the port. The page refuses a URL elsewhere before any
 * request, with a message naming the flag; the policy refuses a redirect elsewhere, which explainBlocked turns
 * into the same advice. Used by the page (models.js, model_catalog.js) and by sw.js (importScripts).
 *
 *     Pychat.ModelOrigins.allows("https://cdn-lfs.hf.co/x.gguf", ["https://*.hf.co"])   // true
 *     Pychat.ModelOrigins.refusal(url, origins)     // null, or the message to show (which flag would allow it)
 *     Pychat.ModelOrigins.explainBlocked(origins, onMessage)   // the page: a blocked connection explained
 */
(function (Pychat) {
  "use strict";

  const DEFAULT_PORTS = {"https:": "", "http:": ""};  // URL.port is "" for a scheme's default port

  /* Does the origin `pattern` ("https://host", "https://*.host", "http://127.0.0.1:8001") cover `url` (a URL)? */
  function covers(pattern, url) {
    const match = /^([a-z]+:)\/\/(\*\.)?([^/:]+|\[[^\]]+\])(?::(\d+))?$/.exec(pattern);
    if (!match || match[1] !== url.protocol || !(url.protocol in DEFAULT_PORTS)) return false;
    const [, , wildcard, host, port = ""] = match;
    const hostMatches = wildcard ? url.hostname.endsWith("." + host) : url.hostname === host;
    return hostMatches && url.port === port;
  }

  /* May a model come from `address` (a URL or a string, relative to this page)? */
  function allows(address, origins = []) {
    const url = new URL(address, self.location.href);
    return url.origin === self.location.origin || origins.some((pattern) => covers(pattern, url));
  }

  /* Why the page refuses to download from `address`, or null when it may. */
  function refusal(address, origins = []) {
    if (allows(address, origins)) return null;
    const url = new URL(address, self.location.href);
    const allowed = [self.location.origin, ...origins].join(", ");
    return `${url.origin} is not an origin this site may download models from (it may from ${allowed}). Whoever ` +
           `deploys the site can allow it: build_site.py --model-origin ${url.origin} (and the origins its ` +
           `redirects lead to). Or download ${url.href} yourself and drop the file here.`;
  }

  /* Explain, once per origin, each connection the Content-Security-Policy blocked, through onMessage(text). On an
   * origin the deploy lists, that was a redirect to one it does not (typically a model host's CDN): the browser
   * reports the URL asked for, never where it was sent, so the message cannot name the target. */
  function explainBlocked(origins, onMessage) {
    const told = new Set();
    document.addEventListener("securitypolicyviolation", (event) => {
      if (event.effectiveDirective !== "connect-src" || !/^https?:/.test(event.blockedURI)) return;
      const origin = new URL(event.blockedURI).origin;
      if (told.has(origin)) return;
      told.add(origin);
      onMessage(allows(event.blockedURI, origins)
        ? `${origin} redirected a download to an origin this site's security policy does not list (the browser's ` +
          "developer tools, Network tab, show which). Whoever deploys the site can allow it: build_site.py " +
          "--model-origin with that origin too (for Hugging Face: https://*.hf.co)."
        : refusal(event.blockedURI, origins));
    });
  }

  Object.assign(Pychat, {ModelOrigins: {allows, refusal, explainBlocked}});
})(self.Pychat = self.Pychat || {});
