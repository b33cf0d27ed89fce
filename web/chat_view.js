/*
 * chat_view.js: the message list. What the user wrote is shown as plain text (textContent, whitespace kept).
 * An answer is shown as Markdown rendered by web/markdown.js, which lets no HTML of the model's through: a
 * model that answers "<img src=x onerror=...>" shows exactly those characters.
 *
 *     const view = new Pychat.ChatView(document.getElementById("messages"));
 *     view.add("user", "Hi!");
 *     const answer = view.add("assistant", "");
 *     answer.append("**Hel");  answer.append("lo**");   // rendered at most once an animation frame
 *     answer.setStats({...});   // the end: the whole text rendered now (finish() does only that)
 *     answer.text               // "**Hello**": the raw Markdown, as the model wrote it
 *     view.add("assistant", "", {toolCalls});   // OpenAI's tool_calls: a block per call (tool_calls.js)
 *     view.markDropped(2);      // the 2 oldest messages are no longer in the model's context
 *     view.messages[1].showVersions({n: 1, m: 2}, (step) => ...);  // "Previous version", "1 / 2", "Next version"
 *
 * Every message's .content element holds its text as written; an answer's is hidden and its rendering is
 * shown in the .markdown element after it. An answer's reasoning (<think>…</think>, reasoning.js) is shown as
 * plain text in a collapsed <details class="reasoning"> before it, "Reasoning…" while it streams.
 */
(function (Pychat) {
  "use strict";

  /* "8 tokens · 2.9 tok/s · first token 3.10 s · prompt 42 new + 0 cached" */
  function formatStats(stats, firstTokenSeconds) {
    const parts = [`${stats.generated_tokens} tokens`, `${stats.generation_tps.toFixed(1)} tok/s`];
    if (firstTokenSeconds !== null) parts.push(`first token ${firstTokenSeconds.toFixed(2)} s`);
    parts.push(`prompt ${stats.prompt_tokens} new + ${stats.reused_tokens} cached tokens`);
    if (stats.stop_reason === "cancelled") parts.push("stopped");
    if (stats.stop_reason === "length") parts.push("max tokens reached");
    return parts.join(" · ");
  }

  class MessageView {
    constructor(root, role, text) {
      const {element} = Pychat.PageUI;
      this.root = element("div", "", "message");
      this.root.dataset.role = role;
      this.root.appendChild(element("div", role === "user" ? "You" : "Model", "role"));
      this.source = text || "";  // the raw text (an answer's Markdown)
      this.content = element("div", this.source, "content");
      this.root.appendChild(this.content);
      if (role !== "user") {
        this.content.hidden = true;
        this.markdown = element("div", undefined, "markdown");
        this.root.appendChild(this.markdown);
      }
      this.footer = element("div", "", "stats");
      this.root.appendChild(this.footer);
      root.appendChild(this.root);
      this.frame = 0;          // the requestAnimationFrame of the next render, 0 if none is due
      this.rendered = null;    // the source .content and .markdown show
      this.finish();
    }

    append(text) {
      this.source += text;
      if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
    }

    get text() {
      return this.source;
    }

    /* Render the text as it is now, at once (append renders on the next animation frame). */
    finish() {
      if (this.frame) cancelAnimationFrame(this.frame);
      this.frame = 0;
      this.render();
    }

    /* The Markdown rendered anew. Only the top-level blocks from the first one that changed are replaced, so
     * while an answer streams the finished paragraphs and code blocks (a text selection, a "Copied") stay. The
     * list stays scrolled to the bottom if it was there. */
    render() {
      if (this.rendered === this.source) return;
      this.rendered = this.source;
      this.content.textContent = this.source;
      if (!this.markdown) return;
      const list = this.root.parentNode;
      const atBottom = list && list.scrollHeight - list.scrollTop - list.clientHeight < 8;
      const {reasoning, answer, thinking} = Pychat.Reasoning.split(this.source);
      this.showReasoning(reasoning, thinking);
      const fresh = Array.from(Pychat.Markdown.render(answer).childNodes);
      const shown = this.markdown.childNodes;
      let same = 0;
      while (same < shown.length && same < fresh.length && shown[same].isEqualNode(fresh[same])) same++;
      while (shown.length > same) this.markdown.lastChild.remove();
      this.markdown.append(...fresh.slice(same));
      if (atBottom) list.scrollTop = list.scrollHeight;
    }

    /* The collapsed "Reasoning" block, made when the answer starts with one; opened or closed by the user only. */
    showReasoning(text, thinking) {
      if (!this.reasoning) {
        if (!text && !thinking) return;
        const {element} = Pychat.PageUI;
        this.reasoning = element("details", undefined, "reasoning");
        this.reasoning.append(element("summary"), element("div", undefined, "reasoning-text"));
        this.root.insertBefore(this.reasoning, this.markdown);
      }
      this.reasoning.firstChild.textContent = thinking ? "Reasoning…" : "Reasoning";
      this.reasoning.lastChild.textContent = text;
      this.reasoning.dataset.thinking = String(thinking);
    }

    setNote(text) {
      this.footer.textContent = text;
    }

    setStats(stats, firstTokenSeconds) {
      this.finish();
      this.footer.textContent = formatStats(stats, firstTokenSeconds);
      this.root.dataset.done = "true";
    }

    /* The answer's tool calls (OpenAI's tool_calls), shown as such after its text (replacing earlier ones). */
    showToolCalls(toolCalls) {
      if (this.toolCalls) this.toolCalls.remove();
      this.toolCalls = Pychat.ToolCalls.render(toolCalls);
      this.root.insertBefore(this.toolCalls, this.footer);
    }

    addNotice(text) {
      this.root.insertBefore(Pychat.PageUI.element("div", text, "notice"), this.footer);
    }

    /* The row of small buttons under the message, made when the first one comes. */
    actionRow() {
      if (!this.actions) {
        this.actions = Pychat.PageUI.element("div", undefined, "actions");
        this.root.appendChild(this.actions);
      }
      return this.actions;
    }

    /* A small button under the message (Edit, Regenerate). */
    addAction(label, onClick) {
      const button = Pychat.PageUI.element("button", label, "action");
      button.type = "button";
      button.onclick = onClick;
      this.actionRow().appendChild(button);
      return button;
    }

    /* The message is version n of m (conversation_tree.js): "‹ n / m ›" first in its row, the arrows named
     * "Previous version" and "Next version" for screen readers and disabled at the ends; onSwitch(-1 | 1). */
    showVersions({n, m}, onSwitch) {
      const {element} = Pychat.PageUI;
      const group = element("span", undefined, "versions");
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", "Versions");
      const arrow = (text, name, step, disabled) => {
        const button = element("button", text, "action");
        Object.assign(button, {type: "button", disabled, title: name, onclick: () => onSwitch(step)});
        button.setAttribute("aria-label", name);
        return button;
      };
      this.versionButtons = {[-1]: arrow("‹", "Previous version", -1, n <= 1),
                             [1]: arrow("›", "Next version", 1, n >= m)};
      group.append(this.versionButtons[-1], element("span", `${n} / ${m}`, "version-label"), this.versionButtons[1]);
      this.actionRow().prepend(group);
    }

    /* The message's text in an editor with Send and Cancel; onSend(text) returns true when it took the text
     * (the chat then shows the conversation anew), false to keep editing. */
    editText(onSend) {
      const {element} = Pychat.PageUI;
      const editor = element("div", undefined, "editor");
      const input = element("textarea");
      input.value = this.text;
      input.rows = Math.min(12, this.text.split("\n").length + 1);
      input.setAttribute("aria-label", "Edit the message");
      const send = element("button", "Send", "action");
      const cancel = element("button", "Cancel", "action");
      const close = () => { editor.remove(); this.content.hidden = false; if (this.actions) this.actions.hidden = false; };
      send.onclick = () => { if (onSend(input.value)) close(); };
      cancel.onclick = close;
      input.onkeydown = (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send.onclick(); }
        if (e.key === "Escape") { e.stopPropagation(); close(); }
      };
      editor.append(input, send, cancel);
      this.content.hidden = true;
      if (this.actions) this.actions.hidden = true;
      this.root.insertBefore(editor, this.content);
      input.focus();
    }

    markDropped() {
      if (this.root.dataset.dropped === "true") return;
      this.root.dataset.dropped = "true";
      this.root.insertBefore(Pychat.PageUI.element("div", "Dropped from the model's context", "dropped"), this.content);
    }
  }

  class ChatView {
    constructor(root) {
      this.root = root;
      this.messages = [];  // the MessageViews in conversation order
    }

    add(role, text, {toolCalls = null} = {}) {
      const view = new MessageView(this.root, role, text);
      if (toolCalls && toolCalls.length) view.showToolCalls(toolCalls);
      this.messages.push(view);
      this.scroll();
      return view;
    }

    /* The `count` oldest messages were trimmed out of the context: the model no longer sees them. */
    markDropped(count) {
      for (const view of this.messages.slice(0, count)) view.markDropped();
    }

    clear() {
      this.root.replaceChildren();
      this.messages = [];
    }

    scroll() {
      this.root.scrollTop = this.root.scrollHeight;
    }
  }

  Object.assign(Pychat, {ChatView});
})(self.Pychat = self.Pychat || {});
