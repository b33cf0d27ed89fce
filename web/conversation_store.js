/*
 * conversation_store.js: the saved conversations, in IndexedDB (or, when it cannot be opened, as in some
 * private windows, in localStorage), and their export / import as JSON (the whole tree of versions).
 *
 *     const store = await Pychat.ConversationStore.open();
 *     const conversation = Pychat.ConversationStore.create({system_prompt: ""});  // {id, title, nodes, messages, ...}
 *     await store.put(conversation); await store.get(id); await store.list(); await store.remove(id);
 *     store.keepCurrent(conversation); await store.current();  // the one in use, kept across visits
 *     const text = Pychat.ConversationStore.exportJSON(await store.list());
 *     const imported = Pychat.ConversationStore.parseImport(text);  // conversations with fresh ids, or ConversationImportError
 *     const fromFile = await Pychat.ConversationStore.readImport(file);  // the same; a file too large is never read
 *     await Pychat.ConversationStore.readImport(file, parseOther);  // the size check, then another format's parser
 *
 * A conversation: {id, title, titled (true once the user renamed it), system_prompt, version: 2, nodes: [{id,
 * parent, selected, role: "user" | "assistant", content, stats?, attachments? (a user's files: [{name, type,
 * text, tokens}], attachments.js), dropped? (how many of the oldest messages this answer's prompt left out)}],
 * selected, created, updated} (times in ms): every version of every message, as conversation_tree.js keeps
 * them. What the store hands out also has `messages` and `dropped`: the messages shown and the last one's
 * dropped count (ConversationTree.shown); it stores the tree without them, and reads a conversation of the
 * older flat format ({messages, dropped}, no version) as a tree of one branch. The title comes from the first
 * message shown until the user renames it. The page owns the conversation: Python gets the messages shown at
 * every turn (chat.js).
 */
(function (Pychat) {
  "use strict";

  const DB_NAME = "pychat-conversations";
  const STORE = "conversations";
  const FORMAT = "pychat-conversations";
  const {loadSaved, save} = Pychat;  // util.js
  const Tree = Pychat.ConversationTree;  // conversation_tree.js
  const FALLBACK_KEY = "pychat.conversations";  // localStorage, without IndexedDB
  const CURRENT_KEY = "pychat.current-conversation";  // the conversation in use (once it has messages), also in
                                                      // localStorage: an eviction of IndexedDB leaves it
  const OLD_KEY = "pychat.conversation";  // before conversations had a list: imported once
  const MAX_IMPORT_BYTES = 50 * 1024 * 1024;
  const TITLE_CHARS = 60;

  class ConversationImportError extends Error {
    constructor(message) {
      super(message);
      this.name = "ConversationImportError";
    }
  }

  const request = (r) => new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });

  function newId() {
    return "c-" + Date.now().toString(36) + "-" + Array.from(crypto.getRandomValues(new Uint8Array(6)),
      (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /* "What is the capital of France?" from the first message, on one line and cut at TITLE_CHARS. */
  function titleFrom(messages) {
    const first = messages.find((m) => m.role === "user");
    const text = first ? first.content.replace(/\s+/g, " ").trim() : "";
    if (!text) return "New chat";
    return text.length > TITLE_CHARS ? text.slice(0, TITLE_CHARS - 1).trimEnd() + "…" : text;
  }

  /* A new conversation of `messages` (one branch), or of `tree` ({nodes, selected}: every version). */
  function create({system_prompt = "", messages = [], tree = null, title = null} = {}) {
    const now = Date.now();
    const conversation = Tree.shown(tree ? {version: Tree.VERSION, ...tree} : Tree.migrate({messages}));
    return {id: newId(), ...conversation, title: title || titleFrom(conversation.messages), titled: Boolean(title),
            system_prompt, created: now, updated: now};
  }

  /* The conversation after a change of its messages: a new title (unless the user chose one), a new time. */
  function touched(conversation) {
    const title = conversation.titled ? conversation.title : titleFrom(conversation.messages);
    return {...conversation, title, updated: Date.now()};
  }

  /* What makes two conversations the same one for an import: when it began and what was said, every version. */
  function fingerprint(conversation) {
    const {created, nodes} = Tree.migrate(conversation);
    return JSON.stringify([created, nodes.map(({parent, role, content}) => [parent, role, content])]);
  }

  /* The backup: every conversation with its whole tree of versions (format version 2; a flat one as its tree). */
  function exportJSON(conversations) {
    const plain = conversations.map(Tree.migrate).map(
      ({title, titled, system_prompt, nodes, selected, created, updated}) =>
        ({title, titled, system_prompt, version: Tree.VERSION, selected, nodes: nodes.map(exportedNode), created,
          updated}));
    return JSON.stringify({format: FORMAT, version: Tree.VERSION, conversations: plain}, null, 1);
  }

  function exportedNode({id, parent, selected, role, content, attachments}) {
    return {id, parent, selected, role, content, ...(attachments ? {attachments} : {})};
  }

  /* An imported message's attachments, checked: [{name, type, text, tokens}] (tokens: a count or null). */
  function checkedAttachments(attachments, fail) {
    if (!Array.isArray(attachments)) fail("its attachments are not a list");
    return attachments.map((a) => {
      if (!a || typeof a.name !== "string" || typeof a.text !== "string") fail("an attachment has no name or text");
      const tokens = Number.isInteger(a.tokens) && a.tokens >= 0 ? a.tokens : null;
      return {name: a.name, type: typeof a.type === "string" ? a.type : "text/plain", text: a.text, tokens};
    });
  }

  /* One imported conversation checked field by field; `where` names it in the message ("conversation 2"). */
  function checkedConversation(value, where) {
    const fail = (why) => { throw new ConversationImportError(`${where}: ${why}`); };
    if (!value || typeof value !== "object" || Array.isArray(value)) fail("not an object");
    const branched = Array.isArray(value.nodes);  // format 2: every version; format 1: the messages of one branch
    if (!branched && !Array.isArray(value.messages)) fail("no list of messages");
    const checkMessage = (m, i) => {
      if (!m || (m.role !== "user" && m.role !== "assistant")) fail(`message ${i + 1} has no role user or assistant`);
      if (typeof m.content !== "string") fail(`message ${i + 1} has no text content`);
      if (m.attachments == null || m.role !== "user") return {role: m.role, content: m.content};
      return {role: m.role, content: m.content,
              attachments: checkedAttachments(m.attachments, (why) => fail(`message ${i + 1}: ${why}`))};
    };
    const messages = branched ? [] : value.messages.map(checkMessage);
    const tree = branched ? Tree.checkedNodes(value.nodes, value.selected, checkMessage, fail) : null;
    if (value.system_prompt != null && typeof value.system_prompt !== "string") fail("the system prompt is not text");
    if (value.title != null && typeof value.title !== "string") fail("the title is not text");
    const title = value.titled && value.title ? value.title.slice(0, 200) : null;
    const conversation = create({system_prompt: value.system_prompt || "", messages, tree, title});
    const time = (t) => (Number.isFinite(t) && t > 0 ? t : conversation.created);
    return {...conversation, created: time(value.created), updated: time(value.updated)};
  }

  const tooLarge = () => new ConversationImportError(
    `The file is too large to be a conversation export (over ${MAX_IMPORT_BYTES / 1048576} MB).`);

  /* parse (parseImport unless given) of a File's text: its size is checked before a byte of it is read. */
  async function readImport(file, parse = parseImport) {
    if (file.size > MAX_IMPORT_BYTES) throw tooLarge();
    return parse(await file.text());
  }

  /* The conversations in an exported file (or one conversation on its own), each with a fresh id, so an
   * import never overwrites; anything else is a ConversationImportError that says what is wrong. */
  function parseImport(text) {
    if (text.length > MAX_IMPORT_BYTES) throw tooLarge();
    let data;
    try {
      data = JSON.parse(text);
    } catch (error) {
      throw new ConversationImportError(`The file is not JSON (${error.message}).`);
    }
    if (data && data.format === FORMAT && Array.isArray(data.conversations)) {
      return data.conversations.map((c, i) => checkedConversation(c, `Conversation ${i + 1}`));
    }
    if (data && (Array.isArray(data.messages) || Array.isArray(data.nodes))) {
      return [checkedConversation(data, "The conversation")];
    }
    throw new ConversationImportError("The file is not a pychat-wasm conversation export: it has neither " +
                                      `"format": "${FORMAT}" with a list of conversations nor a list of messages.`);
  }

  /* A stored conversation as the page uses it: in format 2, with the messages shown. */
  const opened = (stored) => Tree.shown(Tree.migrate(stored));

  class ConversationStore {
    constructor(db) {
      this.db = db;  // null: kept in `memory`, saved to localStorage at each change (while it takes them)
      this.memory = new Map(db ? [] : (loadSaved(FALLBACK_KEY, [])).map((c) => [c.id, Tree.record(c)]));
    }

    static async open() {
      try {
        const opening = indexedDB.open(DB_NAME, 1);
        opening.onupgradeneeded = () => opening.result.createObjectStore(STORE, {keyPath: "id"});
        return new ConversationStore(await request(opening));
      } catch (error) {
        return new ConversationStore(null);
      }
    }

    saveFallback() {
      try {
        localStorage.setItem(FALLBACK_KEY, JSON.stringify([...this.memory.values()]));
      } catch (error) { /* full or disabled: they last for this visit */ }
    }

    async run(mode, operation) {
      const tx = this.db.transaction(STORE, mode);
      const result = await request(operation(tx.objectStore(STORE)));
      await new Promise((resolve, reject) => { tx.oncomplete = resolve; tx.onerror = tx.onabort = () => reject(tx.error); });
      return result;
    }

    /* Newest first, each with its messages shown (and any of the flat format read as a tree). */
    async list() {
      const all = this.db ? await this.run("readonly", (s) => s.getAll()) : [...this.memory.values()];
      return all.map(opened).sort((a, b) => b.updated - a.updated);
    }

    async get(id) {
      if (id == null) return null;
      const stored = this.db ? await this.run("readonly", (s) => s.get(id)) : this.memory.get(id);
      return stored ? opened(stored) : null;
    }

    /* Stored as its tree, without the messages shown (derived again when read). */
    async put(conversation) {
      const stored = Tree.record(conversation);
      if (this.db) await this.run("readwrite", (s) => s.put(stored));
      else { this.memory.set(stored.id, stored); this.saveFallback(); }
    }

    async remove(id) {
      if (this.db) await this.run("readwrite", (s) => s.delete(id));
      else { this.memory.delete(id); this.saveFallback(); }
      if (loadSaved(CURRENT_KEY, {}).id === id) localStorage.removeItem(CURRENT_KEY);
    }

    /* `conversation` is the one in use: its copy in localStorage follows it once it has messages. */
    keepCurrent(conversation) {
      if (conversation.messages.length) save(CURRENT_KEY, Tree.record(conversation));
    }

    /* The conversation in use on the last visit (put back if the store lost it), else the newest, else null. */
    async current() {
      const old = loadSaved(OLD_KEY, null);
      if (old && Array.isArray(old.messages) && old.messages.length) {
        save(CURRENT_KEY, Tree.record(parseImport(JSON.stringify(old))[0]));
      }
      localStorage.removeItem(OLD_KEY);
      const copy = loadSaved(CURRENT_KEY, null);
      if (copy && copy.id && !(await this.get(copy.id))) await this.put(copy);  // new, or the store was cleared
      return (copy && await this.get(copy.id)) || (await this.list())[0] || null;
    }
  }

  Object.assign(ConversationStore, {create, touched, fingerprint, exportJSON, parseImport, readImport,
                                   ConversationImportError});
  Object.assign(Pychat, {ConversationStore});
})(self.Pychat = self.Pychat || {});
