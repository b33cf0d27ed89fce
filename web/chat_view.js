/*
 * chat_view.js: the message list. Everything a model or a user wrote is put on the page with textContent,
 * never as HTML: a model that answers "<img src=x onerror=...>" shows exactly those characters.
 *
 *     const view = new ChatView(document.getElementById("messages"));
 *     view.add("user", "Hi!");
 *     const answer = view.add("assistant", "");
 *     answer.append("Hello");  answer.setStats({...});
 *     view.markDropped(2);      // the 2 oldest messages are no longer in the model's context
 */
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
    const {element} = PageUI;
    this.root = element("div", "", "message");
    this.root.dataset.role = role;
    this.root.appendChild(element("div", role === "user" ? "You" : "Model", "role"));
    this.content = element("div", text, "content");
    this.root.appendChild(this.content);
    this.footer = element("div", "", "stats");
    this.root.appendChild(this.footer);
    root.appendChild(this.root);
  }

  append(text) {
    this.content.textContent += text;
  }

  get text() {
    return this.content.textContent;
  }

  setNote(text) {
    this.footer.textContent = text;
  }

  setStats(stats, firstTokenSeconds) {
    this.footer.textContent = formatStats(stats, firstTokenSeconds);
    this.root.dataset.done = "true";
  }

  addNotice(text) {
    this.root.insertBefore(PageUI.element("div", text, "notice"), this.footer);
  }

  markDropped() {
    if (this.root.dataset.dropped === "true") return;
    this.root.dataset.dropped = "true";
    this.root.insertBefore(PageUI.element("div", "Dropped from the model's context", "dropped"), this.content);
  }
}

class ChatView {
  constructor(root) {
    this.root = root;
    this.messages = [];  // the MessageViews in conversation order
  }

  add(role, text) {
    const view = new MessageView(this.root, role, text);
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

self.ChatView = ChatView;
