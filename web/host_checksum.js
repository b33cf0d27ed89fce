/*
 * host_checksum.js: the sha256 a model's host states, for a download nothing else states one for (a catalog
 * entry with `sha256: null`, a URL typed in), and how the model list words the check that was made.
 *
 * Hugging Face states an LFS file's sha256 in two places. Its resolve URLs
 * (https://huggingface.co/<org>/<repo>/resolve/<revision>/<path>) answer with a 302 carrying X-Linked-Etag (the
 * sha256, quoted) and X-Linked-Size, but a page never sees a redirect's headers: fetch follows it and shows the
 * last answer only, so these count only where that answer carries them itself. The same path under raw/
 * answers with the file's Git LFS pointer, a few lines of text a page can read ("oid sha256:<64 hex>",
 * "size <bytes>"), as Transformers.js reads it. model_download.js asks for the pointer before a download and
 * reads the headers of every answer; models stored record which one was checked (`sha256From`).
 *
 *     await Pychat.HostChecksum.fromPointer(url);    // {sha256, size, from: "LFS pointer"} or null
 *     Pychat.HostChecksum.fromHeaders(response);     // {sha256, size, from: "X-Linked-Etag"} or null
 *     Pychat.HostChecksum.describe(record);          // "verified (sha256)", "not verified (...)", ... or ""
 *
 *     parsePointer("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a…\nsize 386404992\n")
 *       -> {sha256: "4d7a…", size: 386404992, from: "LFS pointer"}
 */
(function (Pychat) {
  "use strict";

  const RESOLVE_PATH = /^(\/[^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/;  // /<org>/<repo>/resolve/<revision>/<path>
  const POINTER_BYTES = 1024;  // a pointer is about 130 bytes; a bigger answer is the file itself (kept in git)
  const SHA256 = /^[0-9a-f]{64}$/;

  /* The raw/ URL of a resolve/ URL, or null for any other URL. */
  function pointerURL(url) {
    const address = new URL(url, location.href);
    const match = RESOLVE_PATH.exec(address.pathname);
    return match ? `${address.origin}${match[1]}/raw/${match[2]}/${match[3]}` : null;
  }

  /* A Git LFS pointer's sha256 and size, or null when `text` is no pointer. */
  function parsePointer(text) {
    if (!text.startsWith("version https://git-lfs.github.com/spec/")) return null;
    const oid = /^oid sha256:([0-9a-f]{64})$/m.exec(text);
    const size = /^size (\d+)$/m.exec(text);
    return oid ? {sha256: oid[1], size: size ? Number(size[1]) : 0, from: "LFS pointer"} : null;
  }

  /* What the file's LFS pointer states; null when the URL is no resolve URL or no pointer comes back (a
   * network error, a 404, a file kept in git itself): the download then goes on unchecked by it. */
  async function fromPointer(url) {
    try {
      const address = pointerURL(url);
      if (!address) return null;
      const response = await fetch(address, {cache: "no-store"});
      const length = Number(response.headers.get("Content-Length")) || 0;
      if (!response.ok || length > POINTER_BYTES) {
        if (response.body) response.body.cancel().catch(() => {});
        return null;
      }
      return parsePointer((await response.text()).slice(0, POINTER_BYTES));
    } catch (error) {
      return null;
    }
  }

  /* X-Linked-Etag (a sha256: 64 hex digits, quoted; any other ETag is no checksum) and X-Linked-Size of an
   * answer that carries them and exposes them to CORS; else null. */
  function fromHeaders(response) {
    const etag = (response.headers.get("X-Linked-Etag") || "").trim().replace(/^W\//, "").replace(/^"|"$/g, "");
    if (!SHA256.test(etag.toLowerCase())) return null;
    return {sha256: etag.toLowerCase(), size: Number(response.headers.get("X-Linked-Size")) || 0, from: "X-Linked-Etag"};
  }

  /* How a downloaded model was checked, as the model list says it; "" for a file not downloaded (the user's own,
   * a model trained here) or stored before the check was recorded. */
  function describe(record) {
    if (!record.url || record.sha256From === undefined) return "";
    if (!record.sha256From) return "not verified (no sha256 from the catalog or the host)";
    if (record.sha256From === "stated") return "verified (sha256)";
    return `verified (sha256 from the host's ${record.sha256From})`;
  }

  Object.assign(Pychat, {HostChecksum: {fromPointer, fromHeaders, describe, parsePointer, pointerURL}});
})(self.Pychat = self.Pychat || {});
