/*
 * conversation_search.js: the search box over all saved conversations (#conversation-search). It matches
 * titles and the messages shown (of a branched conversation, the branch on screen, so a hit opens where it is
 * seen: conversation_tree.js), ignoring case, lists the hits with a snippet in place of the conversation list,
 * and a hit opens its conversation with the match marked (<mark>) in the message and scrolled into view.
 *
 *     Pychat.ConversationSearch.findHits(conversations, "paris");
 *     // [{id, title, index: 1 (the message; -1: the title), role: "assistant", snippet: {before, match, after}}]
 *     new Pychat.ConversationSearch({store, open: async (id) => ...}).wire();
 *
 * Every text goes onto the page as text nodes (the snippet, the marks inside a rendered answer): nothing the
 * user or the model wrote is ever parsed as HTML. A match is marked within one text node of the shown message;
 * one that crosses Markdown's formatting ("a **b**") still opens and outlines its message.
 */
(function (Pychat) {
  "use strict";

  const MAX_HITS = 50;
  const BEFORE = 30, AFTER = 60;  // characters of snippet around a match

  /* The query as a case-insensitive literal pattern, or null for an empty one. */
  function queryPattern(query, flags = "iu") {
    const text = query.trim();
    return text ? new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), flags) : null;
  }

  /* {before: "…the capital is ", match: "Paris", after: ", on the Seine."}: the match in context, on one line. */
  function snippet(text, start, length) {
    const from = Math.max(0, start - BEFORE), to = Math.min(text.length, start + length + AFTER);
    const flat = (part) => part.replace(/\s+/g, " ");
    return {before: (from > 0 ? "…" : "") + flat(text.slice(from, start)).trimStart(),
            match: flat(text.slice(start, start + length)),
            after: flat(text.slice(start + length, to)).trimEnd() + (to < text.length ? "…" : "")};
  }

  /* The hits in `conversations` (in their order), at most MAX_HITS: each message that matches, and the title
   * of a conversation none of whose messages does. */
  function findHits(conversations, query, limit = MAX_HITS) {
    const pattern = queryPattern(query);
    if (!pattern) return [];
    const hits = [];
    for (const {id, title, messages} of conversations) {
      const hit = (index, role, text) => {
        const match = pattern.exec(text);
        return match && {id, title, index, role, snippet: snippet(text, match.index, match[0].length)};
      };
      const found = messages.map((m, index) => hit(index, m.role, m.content)).filter(Boolean);
      const titleHit = !found.length && hit(-1, "title", title);
      if (titleHit) found.push(titleHit);
      hits.push(...found);
      if (hits.length >= limit) return hits.slice(0, limit);
    }
    return hits;
  }

  /* Each match of `pattern` (global) inside a text node under `root` wrapped in a <mark>; returns the marks. */
  function markMatches(root, pattern) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    const marks = [];
    for (const node of nodes) {
      const text = node.data, pieces = [];
      let last = 0;
      for (const match of text.matchAll(pattern)) {
        if (!match[0]) continue;
        pieces.push(document.createTextNode(text.slice(last, match.index)));
        const mark = Pychat.PageUI.element("mark", match[0]);
        marks.push(mark);
        pieces.push(mark);
        last = match.index + match[0].length;
      }
      if (!pieces.length) continue;
      pieces.push(document.createTextNode(text.slice(last)));
      node.replaceWith(...pieces);
    }
    return marks;
  }

  const ROLE_NAMES = {user: "You", assistant: "Model", title: "Title"};

  class ConversationSearch {
    constructor({store, open}) {
      Object.assign(this, {store, open});
      this.input = document.getElementById("conversation-search");
      this.results = document.getElementById("search-results");
      this.list = document.getElementById("conversation-list");
      this.searching = 0;  // the latest search: an older one that finishes later shows nothing
    }

    wire() {
      this.input.oninput = () => this.search();
      this.input.onkeydown = (e) => {  // Escape empties the box, and only that (elsewhere it stops the answer)
        if (e.key !== "Escape" || !this.input.value) return;
        e.preventDefault();
        e.stopPropagation();
        this.input.value = "";
        this.search();
      };
    }

    /* The hits for the box's text in place of the list (the list again when the box is empty). */
    async search() {
      const query = this.input.value, search = ++this.searching;
      const hits = query.trim() ? findHits(await this.store.list(), query) : null;
      if (search !== this.searching) return;
      this.list.hidden = Boolean(hits);
      this.results.hidden = !hits;
      if (!hits) {
        this.results.replaceChildren();
        return;
      }
      const {element} = Pychat.PageUI;
      const items = hits.map((hit) => {
        const button = element("button", undefined, "hit");
        button.type = "button";
        button.append(element("span", hit.title, "hit-title"), element("span", ROLE_NAMES[hit.role], "hit-role"));
        const {before, match, after} = hit.snippet;
        const text = element("span", undefined, "hit-snippet");
        text.append(before, element("mark", match), after);
        button.append(text);
        button.onclick = () => this.show(hit, query);
        const item = element("li");
        item.append(button);
        return item;
      });
      this.results.replaceChildren(...(items.length ? items : [element("li", `Nothing matches “${query.trim()}”.`, "none")]));
    }

    /* The hit's conversation on the page, its message outlined, the match marked and scrolled into view. */
    async show(hit, query) {
      await this.open(hit.id);
      const messages = document.querySelectorAll("#messages .message");
      for (const old of document.querySelectorAll("#messages .search-hit")) old.classList.remove("search-hit");
      const message = messages[hit.index];
      if (!message) return;
      message.classList.add("search-hit");
      const shown = message.querySelector(".markdown") || message.querySelector(".content");
      const [first] = markMatches(shown, queryPattern(query, "giu"));
      (first || message).scrollIntoView({block: "center"});
    }
  }

  Object.assign(ConversationSearch, {findHits, snippet});
  Object.assign(Pychat, {ConversationSearch});
})(self.Pychat = self.Pychat || {});
