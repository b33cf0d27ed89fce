/*
 * conversation_tree.js: a conversation's messages as a tree, so that editing a message or regenerating an
 * answer keeps the old version (as llama.cpp's web UI does). Pure functions on plain data, no DOM.
 *
 * The stored conversation (format version 2) holds every message ever written as a node, in the order they
 * were made: {id (its index), parent (the id of the message it answers or follows, null for a first
 * message), selected (the id of the child shown after it, null when none), role, content, and the message's
 * own fields: stats, first_token, attachments, tool_calls, dropped}. A message's versions are its siblings:
 * the nodes with the same parent. `selected` of the conversation itself is the first message shown.
 *
 *     {version: 2, selected: 0, nodes: [
 *       {id: 0, parent: null, selected: 3, role: "user", content: "Capital of France?"},
 *       {id: 1, parent: 0, selected: null, role: "assistant", content: "Paris."},
 *       {id: 2, parent: null, selected: null, role: "user", content: "Capital of Italy?"},  // Edit: version 2 of 0
 *       {id: 3, parent: 0, selected: null, role: "assistant", content: "Paris!"}]}          // Regenerate: 2 of 1
 *     // shown: 0 -> 3, "1 / 2" on both; switching message 0 to its next version shows 2 (and what follows it)
 *
 * The shown path (the root's selected node, its selected child, and so on) is the one owner of "the messages
 * shown": shown(conversation) adds it as `messages` (and the last answer's `dropped`) for every reader that
 * needs only those (the view, the next request, search, Markdown and JSONL export), and record(conversation)
 * takes them off again for storage. A flat conversation of format 1 ({messages: [...], dropped}) becomes a
 * chain with every field kept (migrate); conversation_store.js migrates what it reads.
 *
 *     const Tree = Pychat.ConversationTree;
 *     let c = Tree.shown(Tree.migrate({messages: [user, answer]}));  // c.messages: [user, answer]
 *     Tree.shownPath(c);                      // the same as nodes: [{id: 0, parent: null, ...}, {id: 1, ...}]
 *     ({conversation: c} = Tree.add(c, null, {role: "user", content: "edited"}));  // Edit of the first
 *     Tree.versions(c, 2);                    // {n: 2, m: 2, previous: 0, next: null}
 *     c = Tree.select(c, 0);                  // the first version again, with its answer
 */
(function (Pychat) {
  "use strict";

  const VERSION = 2;
  const DERIVED = ["messages", "dropped"];  // shown() computes them; record() leaves them out
  const TREE_FIELDS = ["id", "parent", "selected"];

  /* The nodes whose parent is `parent` (null: the first messages), oldest first: a message's versions. */
  function childrenOf({nodes}, parent) {
    return nodes.filter((node) => node.parent === parent);
  }

  /* The child shown after `parent` (null: the first message shown): its selected one, else the newest. */
  function shownChild(conversation, parent) {
    const selected = parent === null ? conversation.selected : conversation.nodes[parent].selected;
    const children = childrenOf(conversation, parent);
    return children.find((node) => node.id === selected) || children[children.length - 1] || null;
  }

  /* The messages shown: from the first message shown, each node's selected child, to a node without one. */
  function shownPath(conversation) {
    const path = [];
    for (let node = shownChild(conversation, null); node; node = shownChild(conversation, node.id)) path.push(node);
    return path;
  }

  /* The messages from the first one to the node `id`, as a request that answers it sends them. */
  function pathTo({nodes}, id) {
    const path = [];
    for (let node = id === null ? null : nodes[id]; node; node = node.parent === null ? null : nodes[node.parent]) {
      path.unshift(node);
    }
    return path;
  }

  /* The stored conversation with what is shown: `messages` (the shown path's messages, without the tree's
   * fields) and `dropped` (how many of the oldest messages the prompt of the last answer shown left out). */
  function shown(conversation) {
    const path = shownPath(conversation);
    const last = path[path.length - 1];
    return {...conversation, messages: path.map(messageFields), dropped: (last && last.dropped) || 0};
  }

  /* What is stored: the conversation in format 2 without the fields shown() derives. */
  function record(conversation) {
    const tree = migrate(conversation);
    return Object.fromEntries(Object.entries(tree).filter(([key]) => !DERIVED.includes(key)));
  }

  /* A message as a node: its own fields, without another tree's id, parent and selection. */
  function messageFields(message) {
    return Object.fromEntries(Object.entries(message).filter(([key]) => !TREE_FIELDS.includes(key)));
  }

  /* The nodes of a flat list of messages: a chain, each message the selected child of the one before. */
  function chain(messages) {
    return messages.map((message, id) => ({...messageFields(message), id, parent: id ? id - 1 : null,
                                           selected: id + 1 < messages.length ? id + 1 : null}));
  }

  /* A conversation of format 1 ({messages, dropped}) in format 2, losslessly: the messages become a chain and
   * `dropped` goes to its last message; one in format 2 is returned as it is. */
  function migrate(conversation) {
    if (conversation.version === VERSION && Array.isArray(conversation.nodes)) return conversation;
    const {messages = [], dropped = 0, ...rest} = conversation;
    const nodes = chain(messages);
    const last = nodes[nodes.length - 1];
    if (dropped && last) last.dropped = dropped;
    return {...rest, version: VERSION, selected: nodes.length ? 0 : null, nodes};
  }

  /* `message` added as a new child of `parent` (null: a new first message) and shown, with whatever the old
   * shown child led to kept as the other version: {conversation (shown), id (the new node's)}. */
  function add(conversation, parent, message) {
    const id = conversation.nodes.length;
    const node = {...messageFields(message), id, parent, selected: null};
    return {conversation: select({...conversation, nodes: conversation.nodes.concat(node)}, id), id};
  }

  /* The node `id` shown, and below it the continuation it was left with (each node keeps its selected child). */
  function select(conversation, id) {
    const nodes = conversation.nodes.slice();
    let selected = conversation.selected;
    for (let node = nodes[id]; node; node = node.parent === null ? null : nodes[node.parent]) {
      if (node.parent === null) selected = node.id;
      else nodes[node.parent] = {...nodes[node.parent], selected: node.id};
    }
    return shown({...conversation, nodes, selected});
  }

  /* Which version the node `id` is: {n (from 1), m (how many), previous, next (their ids, null at the ends)}. */
  function versions(conversation, id) {
    const siblings = childrenOf(conversation, conversation.nodes[id].parent);
    const index = siblings.findIndex((node) => node.id === id);
    return {n: index + 1, m: siblings.length, previous: index > 0 ? siblings[index - 1].id : null,
            next: index + 1 < siblings.length ? siblings[index + 1].id : null};
  }

  /* Stored nodes read back (an import): each checked by checkMessage(node, i) (its message fields, or it
   * calls fail), and its parent an earlier node. Returns {nodes, selected}, the ids renumbered in order. */
  function checkedNodes(nodes, selected, checkMessage, fail) {
    const ids = new Map();  // a stored id -> its index here
    const checked = nodes.map((node, i) => {
      if (!node || typeof node !== "object") fail(`message ${i + 1} is not an object`);
      if (node.parent != null && !ids.has(node.parent)) fail(`message ${i + 1} follows no earlier message`);
      ids.set(node.id, i);
      return {...checkMessage(node, i), id: i, parent: node.parent == null ? null : ids.get(node.parent),
              selected: node.selected};
    });
    for (const node of checked) node.selected = ids.has(node.selected) ? ids.get(node.selected) : null;
    return {nodes: checked, selected: ids.has(selected) ? ids.get(selected) : null};
  }

  Object.assign(Pychat, {ConversationTree: {VERSION, shown, record, migrate, add, select, versions, pathTo,
                                            shownPath, messageFields, checkedNodes}});
})(self.Pychat = self.Pychat || {});
