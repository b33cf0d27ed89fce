/*
 * chat_request.js: the chat.completions request that answers a conversation, as the page's chat sends it
 * whole at every turn (chat.js) and asks its context budget: the system prompt as the first message, then the
 * messages as the model reads them (a user's with its attachments, attachments.js; a past answer without its
 * reasoning, reasoning.js; docs/chat.md says why), the sampling form's settings under their API names (an
 * empty field: the page's default, not OpenAI's; no seed: the pool picks one), the stop strings, usage and the
 * context budget on every chunk (the meter), the oldest turns dropped when the context is full. The Settings
 * dialog's response format and tools are the request's constraints.
 *
 *     const body = Pychat.ChatRequest.body(form, {system_prompt, messages});  // form: sampling_form.js's
 *     Object.assign(body, Pychat.ChatRequest.constraints(form));  // {response_format?, tools?}, or its SettingsError
 */
(function (Pychat) {
  "use strict";

  /* The messages as the model reads them: a user's with its attachments, a past answer without its reasoning. */
  function modelMessages(messages) {
    return messages.map((m) => ({role: m.role, content: m.role === "user" ? Pychat.Attachments.promptText(m)
                                                                         : Pychat.Reasoning.answerOnly(m.content)}));
  }

  function body(form, {system_prompt, messages}) {
    const system = system_prompt ? [{role: "system", content: system_prompt}] : [];
    const settings = form.settings();
    for (const name of Object.keys(settings)) settings[name] ??= form.defaults[name];
    const stop = form.stops();
    return {messages: system.concat(modelMessages(messages)), ...settings,
            stop: stop.length ? stop : null, stream: true,
            stream_options: {include_usage: true, continuous_usage_stats: true}, truncation: "auto"};
  }

  /* The Settings dialog's response format and tools as the request's fields (sampling_form.js), or its
   * SettingsError saying what is wrong with them. */
  function constraints(form) {
    const response_format = form.responseFormat(), tools = form.tools();
    return {...(response_format ? {response_format} : {}), ...(tools ? {tools} : {})};
  }

  Object.assign(Pychat, {ChatRequest: {body, constraints}});
})(self.Pychat = self.Pychat || {});
