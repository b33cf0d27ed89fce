/*
 * engine_errors.js (ES module): the typed errors of web/pychat.js's engine, shaped as the official openai
 * client's, so code that catches them ports: an APIError carries the HTTP status engine.fetch answers with
 * and OpenAI's error object {message, type, param, code}; its subclass says the status.
 *
 *     try { await engine.chat.completions.create({messages: []}); }
 *     catch (error) { if (error instanceof BadRequestError) console.log(error.param); }   // "messages"
 *
 * A request the engine refuses is a BadRequestError (400: Python's InvalidRequestError, ContextFullError with
 * code "context_length_exceeded", ...); a path engine.fetch does not answer is a NotFoundError (404) or
 * MethodNotAllowedError (405); the engine failing (Python crashed, out of memory) is an InternalServerError.
 * A request stopped by its AbortSignal rejects with the signal's reason (a DOMException named AbortError),
 * as fetch does. createEngine rejects with an EngineLoadError when the model cannot be loaded.
 */

export class APIError extends Error {
  /* error: OpenAI's error object {message, type, param, code}. */
  constructor(status, error) {
    super(error.message);
    this.name = new.target.name;
    this.status = status;
    this.error = {message: error.message, type: error.type || "invalid_request_error", param: error.param ?? null,
                  code: error.code ?? null};
    this.type = this.error.type;
    this.param = this.error.param;
    this.code = this.error.code;
  }

  /* The error object as engine.fetch's body: {error: {...}}. */
  toJSON() {
    return {error: this.error};
  }
}

export class BadRequestError extends APIError {}
export class NotFoundError extends APIError {}
export class MethodNotAllowedError extends APIError {}
export class InternalServerError extends APIError {}

const BY_STATUS = {400: BadRequestError, 404: NotFoundError, 405: MethodNotAllowedError};

/* The APIError subclass for `status`, made of OpenAI's error object. */
export function apiError(status, error) {
  const Type = BY_STATUS[status] || (status >= 500 ? InternalServerError : APIError);
  return new Type(status, error);
}

/* A failed worker request (web/worker_error.js's WorkerError, whose `openai` Python filled in from the
 * exception: pychat_wasm/browser/protocol.py ErrorReply) as an APIError; a crash is a 500. */
export function fromWorker(error) {
  if (error instanceof APIError) return error;
  if (error && error.openai) return apiError(error.status || 500, error.openai);
  return apiError(500, {message: String(error && error.message || error), type: "server_error"});
}

export class EngineLoadError extends Error {
  /* kind: the Python error's class name (NotGGUFError, ...), or the model store's kind ("network", "quota"). */
  constructor(message, kind) {
    super(message);
    this.name = "EngineLoadError";
    this.kind = kind;
  }
}
