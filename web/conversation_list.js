/*
 * conversation_list.js: the side list of saved conversations (#conversations): open one, rename it, delete
 * it, import a file of them (a JSON export or JSONL, checked by conversation_export.js: a bad file is refused
 * with a message and changes nothing). It wires the search box above it (conversation_search.js) and the
 * Export button (conversation_export.js). New chat is chat.js's.
 *
 *     const list = new Pychat.ConversationList({store, onOpen: (id) => ..., beforeDelete: (id) => ..., alertBox});
 *     list.wire();  list.render(currentId);
 */
(function (Pychat) {
  "use strict";

  class ConversationList {
    constructor({store, onOpen, beforeDelete, alertBox}) {
      Object.assign(this, {store, onOpen, beforeDelete, alertBox});
      this.root = document.getElementById("conversation-list");
      this.currentId = null;
    }

    wire() {
      new Pychat.ConversationSearch({store: this.store, open: this.onOpen}).wire();
      new Pychat.ConversationExporter({store: this.store, currentId: () => this.currentId, alertBox: this.alertBox}).wire();
      document.getElementById("conversation-import").onchange = (e) => {
        if (e.target.files[0]) this.importFile(e.target.files[0]);
        e.target.value = "";
      };
    }

    /* Newest first; the one in use is marked (aria-current). */
    async render(currentId = this.currentId) {
      this.currentId = currentId;
      const {element} = Pychat.PageUI;
      const items = (await this.store.list()).map((conversation) => {
        const item = element("li");
        item.dataset.id = conversation.id;
        if (conversation.id === currentId) item.setAttribute("aria-current", "true");
        const open = element("button", conversation.title, "title");
        open.title = `${conversation.messages.length} messages · ${new Date(conversation.updated).toLocaleString()}`;
        open.onclick = () => this.onOpen(conversation.id);
        const rename = element("button", "Rename", "rename");
        rename.onclick = () => this.rename(item, conversation);
        const remove = element("button", "Delete", "delete");
        remove.onclick = () => this.remove(conversation);
        item.append(open, rename, remove);
        return item;
      });
      this.root.replaceChildren(...items);
    }

    /* The title becomes an input: Enter keeps the new title, Escape (or leaving it empty) keeps the old. */
    rename(item, conversation) {
      const input = document.createElement("input");
      input.value = conversation.title;
      input.maxLength = 200;
      input.setAttribute("aria-label", "Conversation title");
      item.querySelector(".title").replaceWith(input);
      input.focus();
      input.select();
      let finished = false;
      const finish = async (keep) => {
        if (finished) return;
        finished = true;
        const title = input.value.trim();
        if (keep && title && title !== conversation.title) {
          const latest = await this.store.get(conversation.id);  // an answer may have been saved meanwhile
          if (latest) await this.store.put({...latest, title, titled: true});
        }
        this.render();
      };
      input.onkeydown = (e) => {
        if (e.key === "Enter") { e.preventDefault(); finish(true); }
        // Escape cancels the rename, and only that: once Enter has finished it, Escape stops the answer as anywhere
        if (e.key === "Escape" && !finished) { e.stopPropagation(); finish(false); }
      };
      input.onblur = () => finish(true);
    }

    async remove(conversation) {
      if (!confirm(`Delete "${conversation.title}"? This cannot be undone (Export keeps a copy).`)) return;
      await this.beforeDelete(conversation.id);  // an answer still being written there ends first
      await this.store.remove(conversation.id);
      this.render();
    }

    async importFile(file) {
      let conversations;
      try {
        conversations = await Pychat.ConversationExport.readImport(file);
      } catch (error) {
        this.alertBox("error", `Could not import ${file.name}: ${error.message}`);
        return;
      }
      const {fingerprint} = Pychat.ConversationStore;
      const here = new Set((await this.store.list()).map(fingerprint));
      const added = conversations.filter((conversation) => !here.has(fingerprint(conversation)));
      for (const conversation of added) await this.store.put(conversation);
      const skipped = conversations.length - added.length;
      this.alertBox("notice", `Imported ${added.length} conversation${added.length === 1 ? "" : "s"} from ${file.name}` +
                    (skipped ? ` (${skipped} already here).` : "."));
      await this.render();
    }
  }

  Object.assign(Pychat, {ConversationList});
})(self.Pychat = self.Pychat || {});
