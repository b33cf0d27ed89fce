/*
 * web/model_origins.js: which URLs a model may come from, matched as a Content-Security-Policy source matches
 * (CSP Level 3, 6.7.2.8-6.7.2.10: the scheme exactly, the host exactly or, after "*.", as a suffix past a dot,
 * the port exactly with a scheme's default port written or not), and the refusal's text.
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts} from "./web_scripts.mjs";

const PAGE = "https://chat.example/app/";
const {ModelOrigins} = loadWebScripts(["model_origins.js"], {location: new URL(PAGE), URL}).Pychat;

const CASES = [  // [url, origins, allowed]
  ["models/a.gguf", [], true],                                         // the page's own origin, relative
  ["https://chat.example/other/a.gguf", [], true],
  ["https://huggingface.co/o/r/resolve/main/a.gguf", [], false],
  ["https://huggingface.co/o/r/resolve/main/a.gguf", ["https://huggingface.co"], true],
  ["https://huggingface.co:443/a.gguf", ["https://huggingface.co"], true],   // the default port, written
  ["https://huggingface.co:8443/a.gguf", ["https://huggingface.co"], false],
  ["http://huggingface.co/a.gguf", ["https://huggingface.co"], false],   // another scheme
  ["https://cdn-lfs.hf.co/x", ["https://*.hf.co"], true],
  ["https://cas-bridge.xethub.hf.co/x", ["https://*.hf.co"], true],      // any depth of subdomain
  ["https://hf.co/x", ["https://*.hf.co"], false],                       // not the bare host
  ["https://evilhf.co/x", ["https://*.hf.co"], false],                   // a suffix past a dot only
  ["https://huggingface.co.evil.example/x", ["https://huggingface.co"], false],
  ["http://127.0.0.1:8001/m.gguf", ["http://127.0.0.1:8001"], true],
  ["http://127.0.0.1:8002/m.gguf", ["http://127.0.0.1:8001"], false],
  ["http://[::1]:8001/m.gguf", ["http://[::1]:8001"], true],
  ["data:application/octet-stream,GGUF", ["https://*.hf.co"], false],
];

test("a URL is allowed on the page's origin and on the origins the deploy lists, as CSP matches them", () => {
  for (const [url, origins, allowed] of CASES) {
    assert.equal(ModelOrigins.allows(url, origins), allowed, `${url} with ${origins}`);
    assert.equal(ModelOrigins.refusal(url, origins) === null, allowed, `${url} with ${origins}`);
  }
});

test("a refusal names the origin, the origins allowed, the flag that would allow it and the URL", () => {
  assert.equal(ModelOrigins.refusal("https://models.example/m/a.gguf", ["https://huggingface.co"]),
    "https://models.example is not an origin this site may download models from (it may from " +
    "https://chat.example, https://huggingface.co). Whoever deploys the site can allow it: build_site.py " +
    "--model-origin https://models.example (and the origins its redirects lead to). Or download " +
    "https://models.example/m/a.gguf yourself and drop the file here.");
});
