/*
 * transcript.js: the messages shown of a conversation (conversation_tree.js's shown path) in the message list
 * (chat_view.js), each with its actions: Edit on the user's, "‹ n / m ›" on every message that has other
 * versions (an Edit or a Regenerate kept the old one), Regenerate on the last answer; and the marks of the
 * messages the last answer's prompt left out. What the actions do is chat.js's.
 *
 *     const transcript = new Pychat.Transcript(view, {onEdit: (view, node) => ..., onRegenerate: () => ...,
 *                                                     onSwitch: (index, id, step) => ...});  // step: -1 | 1
 *     transcript.render(conversation);          // the shown path
 *     transcript.render(conversation, path);    // another path of it (a turn's question, while it is answered)
 *     transcript.showVersions(view, conversation, id, index);  // once a new answer is in the conversation
 */
(function (Pychat) {
  "use strict";

  const Tree = Pychat.ConversationTree;  // conversation_tree.js

  class Transcript {
    constructor(view, {onEdit, onRegenerate, onSwitch}) {
      Object.assign(this, {view, onEdit, onRegenerate, onSwitch});
      this.regenerateButton = null;
    }

    render(conversation, path = Tree.shownPath(conversation)) {
      this.view.clear();
      path.forEach((node, index) => {
        const view = this.add(node);
        if (node.stats) view.setStats(node.stats, node.first_token);
        this.showVersions(view, conversation, node.id, index);
      });
      const last = path[path.length - 1];
      this.offerRegenerate(last && last.role === "assistant" ? this.view.messages[path.length - 1] : null);
      this.view.markDropped(conversation.dropped || 0);
    }

    /* One message at the end of the list, with Edit if it is the user's. */
    add(node) {
      const view = this.view.add(node.role, node.content, {toolCalls: node.tool_calls});
      Pychat.Attachments.showChips(view.root, node.attachments, view.content);
      if (node.role === "user") view.addAction("Edit", () => this.onEdit(view, node));
      return view;
    }

    /* "‹ n / m ›" on the message shown at `index` (the node `id`), when it has other versions. */
    showVersions(view, conversation, id, index) {
      const versions = Tree.versions(conversation, id);
      if (versions.m < 2) return;
      view.showVersions(versions, (step) => this.onSwitch(index, step < 0 ? versions.previous : versions.next, step));
    }

    /* Regenerate goes with the last answer only (null: with none, while one is written). */
    offerRegenerate(view) {
      if (this.regenerateButton) this.regenerateButton.remove();
      this.regenerateButton = view ? view.addAction("Regenerate", () => this.onRegenerate()) : null;
    }
  }

  Object.assign(Pychat, {Transcript});
})(self.Pychat = self.Pychat || {});
