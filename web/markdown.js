/*
 * markdown.js: a model's answer, written in Markdown, as DOM nodes that cannot run anything.
 *
 *     const fragment = Pychat.Markdown.render("**Hi** there\n\n```python\nprint(1)\n```");
 *     element.replaceChildren(fragment);
 *
 * The parser is marked (GitHub-flavoured Markdown, a line break is a <br>), the sanitizer DOMPurify: both
 * from npm, pinned in package.json and copied into the site's vendor/ by build/build_site.py, so they run
 * offline and under the page's Content-Security-Policy (script-src 'self').
 *
 * Nothing a model writes becomes HTML of its own. Two layers:
 *   1. marked's renderer turns every raw HTML token (a block like "<div>…" or an inline tag like "<b>") into
 *      visible text: "<img src=x onerror=…>" shows exactly those characters. Text inside a raw <code>/<pre>
 *      tag, which marked would pass through as it is, is escaped too. Links keep their href only when it is an
 *      absolute http:, https: or mailto: URL (after HTML character references are decoded, as the browser
 *      would decode them); any other link (javascript:, data:, vbscript:, relative, …) shows its text only.
 *      Images are never loaded (the policy's img-src 'self' would block a remote one anyway, and an image
 *      URL can leak the conversation): ![alt](url) becomes a link to url whose text is the alt text.
 *      GFM task list boxes are the characters ☐ and ☑, not <input> elements.
 *   2. DOMPurify then parses that HTML and keeps only the elements and attributes this renderer makes
 *      (p, headings, lists, emphasis, code, tables, links, …; href, title, align, start and a language-…
 *      class on <code>), only http(s)/mailto hrefs, and puts target="_blank" rel="noopener noreferrer" on
 *      every link. If DOMPurify or marked is missing or unsupported, the text is shown as plain text.
 * Each code block then gets a bar with its language and a Copy button (made here with createElement, never
 * from HTML) that puts the block's text on the clipboard and says "Copied".
 */
(function (Pychat) {
  "use strict";

  const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
  const ALLOWED_TAGS = ["p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li",
                        "em", "strong", "del", "code", "pre", "a", "table", "thead", "tbody", "tr", "th", "td"];
  const ALLOWED_ATTR = ["href", "title", "align", "start", "class"];
  const CODE_CLASS = /^language-[\w#+.-]{1,40}$/;
  const COPIED_MS = 1500;

  const ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  const escapeHTML = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

  /* `text` with its HTML character references decoded ("&#106;avascript:" is "javascript:"), by an inert
   * document: DOMParser's documents run no script and load nothing. */
  function decodeReferences(text) {
    if (!text.includes("&")) return text;
    return new DOMParser().parseFromString(text, "text/html").documentElement.textContent;
  }

  /* `href` (a URL, as an attribute holds it) parsed, when it is an absolute http(s) or mailto URL; else null. */
  function safeURL(href) {
    if (typeof href !== "string" || !href) return null;
    let url;
    try {
      url = new URL(href);  // no base: a relative URL throws
    } catch (error) {
      return null;
    }
    return LINK_PROTOCOLS.has(url.protocol) ? url.href : null;
  }

  function linkHTML(url, title, labelHTML) {
    return `<a href="${escapeHTML(url)}"${title ? ` title="${escapeHTML(title)}"` : ""}>${labelHTML}</a>`;
  }

  /* marked's renderer, changed where the model's own markup could get through (see the top of the file). */
  const renderer = {
    html({text, block}) {
      const shown = escapeHTML(text);
      return block ? `<p>${shown.trim().replace(/\n/g, "<br>")}</p>\n` : shown;
    },
    text(token) {
      // After a raw <code>, <pre>, <kbd> or <script> tag marked marks the text `escaped` and passes it through
      // as it is: escape it. Other text: marked's own rendering (return false falls back to it).
      if (token.escaped && !token.tokens) return escapeHTML(token.text);
      return false;
    },
    link({href, title, text, tokens}) {
      const label = tokens ? this.parser.parseInline(tokens) : escapeHTML(text);
      const url = safeURL(decodeReferences(href));  // Markdown decodes references in a link's destination
      return url ? linkHTML(url, title, label) : label;
    },
    image({href, title, text}) {
      const label = escapeHTML(text || title || href);
      const url = safeURL(decodeReferences(href));
      return url ? linkHTML(url, title || "Image (not loaded)", label) : label;
    },
    checkbox({checked}) {
      return checked ? "\u2611 " : "\u2610 ";
    },
    code({text, lang}) {
      const language = (lang || "").match(/^\S*/)[0];
      const attribute = CODE_CLASS.test("language-" + language) ? ` class="language-${escapeHTML(language)}"` : "";
      return `<pre><code${attribute}>${escapeHTML(text)}</code></pre>\n`;
    },
  };

  let parser = null;    // a marked.Marked of our own (marked's global instance stays as it is)
  let purifier = null;  // a DOMPurify instance of our own, with our hooks
  function setUp() {
    if (parser) return true;
    if (!self.marked || !self.DOMPurify) return false;
    const purify = self.DOMPurify(self);
    if (!purify.isSupported) return false;  // an unsupported DOMPurify returns its input as it is
    purify.addHook("uponSanitizeAttribute", (node, data) => {
      if (data.attrName === "class" && !(node.nodeName === "CODE" && CODE_CLASS.test(data.attrValue))) {
        data.keepAttr = false;
      }
    });
    purify.addHook("afterSanitizeAttributes", (node) => {
      if (node.nodeName !== "A") return;
      const url = safeURL(node.getAttribute("href"));
      if (url) {
        node.setAttribute("href", url);
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      } else {
        node.removeAttribute("href");  // an <a> without href is plain text
      }
    });
    parser = new self.marked.Marked({gfm: true, breaks: true, renderer});
    purifier = purify;
    return true;
  }

  const PURIFY_CONFIG = {
    ALLOWED_TAGS, ALLOWED_ATTR, ALLOW_DATA_ATTR: false, ALLOW_ARIA_ATTR: false,
    ALLOWED_URI_REGEXP: /^(?:https?|mailto):/i, RETURN_DOM_FRAGMENT: true,
    ADD_URI_SAFE_ATTR: ["align", "start"],  // else their values too must match ALLOWED_URI_REGEXP
  };

  /* The clipboard button for one <pre><code> block: it copies the code's text, then says "Copied". */
  function copyButton(code) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = "Copy";
    let timer = 0;
    const say = (label) => {
      button.textContent = label;
      clearTimeout(timer);
      timer = setTimeout(() => { button.textContent = "Copy"; }, COPIED_MS);
    };
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(code.textContent);
        say("Copied");
      } catch (error) {  // no clipboard (a page not served from https or localhost) or no permission
        const range = document.createRange();
        range.selectNodeContents(code);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        say("Selected: press Ctrl+C");
      }
    });
    return button;
  }

  /* Every <pre> of the fragment inside a .code-block with a bar: the language and a Copy button. */
  function addCodeBars(fragment) {
    for (const pre of fragment.querySelectorAll("pre")) {
      const code = pre.querySelector("code") || pre;
      const block = document.createElement("div");
      block.className = "code-block";
      const bar = document.createElement("div");
      bar.className = "code-bar";
      const language = document.createElement("span");
      language.className = "code-language";
      language.textContent = ((code.className || "").match(/^language-(.*)$/) || ["", ""])[1];
      bar.append(language, copyButton(code));
      pre.replaceWith(block);
      block.append(bar, pre);
    }
  }

  function plainText(text) {
    const fragment = document.createDocumentFragment();
    const paragraph = document.createElement("p");
    paragraph.className = "plain";
    paragraph.textContent = text;
    fragment.appendChild(paragraph);
    return fragment;
  }

  /* HTML through the second guard alone (DOMPurify with the rules above) as a DocumentFragment; render() uses
   * it on marked's output. Without DOMPurify: the HTML's characters as plain text. */
  function sanitize(html) {
    return setUp() ? purifier.sanitize(String(html), PURIFY_CONFIG) : plainText(String(html));
  }

  /* `text` (Markdown) as a DocumentFragment of sanitized nodes; plain text if the libraries are not there. */
  function render(text) {
    text = String(text ?? "");
    if (!text) return document.createDocumentFragment();
    if (!setUp()) return plainText(text);
    const fragment = sanitize(parser.parse(text));
    addCodeBars(fragment);
    return fragment;
  }

  /* available(): whether marked and a supported DOMPurify are there (else render() gives plain text). */
  Object.assign(Pychat, {Markdown: {render, sanitize, safeURL, available: setUp}});
})(self.Pychat = self.Pychat || {});
