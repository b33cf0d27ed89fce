// llama.cpp's side of tests/oracle/test_train_export.py: tokenization, teacher-forced logits and greedy decoding of a
// GGUF file, through node-llama-cpp on the CPU (the build bench/llama_cpp_bench.mjs uses).
//
//   node tests/support/llama_cpp_greedy.mjs < request.json          (run from the repository root)
//
// request: {"model": PATH, "vocab_size": N, "context_size": N,
//           "jobs": [{"text": STRING, "ids": [...], "n_gen": N, "grammar": GBNF, "logits": BOOL, "argmax": BOOL}, ...],
//           "lora": [{"filePath": ADAPTER.gguf, "scale": S}, ...]}   (lora optional: adapters applied at load)
// Prints one JSON line: {"results": [{"tokens", "generated", "logits", "argmax"}, ...]}, one result per job:
//   tokens     llama.cpp's ids of `text`, special tokens parsed, nothing added (tokenize(text, true))
//   generated  greedy continuation of `ids` (temperature 0, no repeat penalty): up to n_gen ids, the
//              end-of-generation token included when one ends it; under `grammar` when given (LlamaGrammar:
//              its sampler checks the top token first and applies the grammar only when that token is
//              refused, as our grammar/sampling.py does)
//   logits     when asked: the raw logits [len(ids)][vocab] after each id of `ids`, evaluated in one batch
//   argmax     when asked ("argmax": true): the id of the highest of those logits after each id of `ids`
// The KV cache is F32 and flash attention is off, so that for F32 weights llama.cpp computes in float32
// throughout (its default F16 cache would round keys and values).
import {getLlama, LlamaGrammar, LlamaGrammarEvaluationState} from "node-llama-cpp";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: request.model});
const context = await model.createContext({
  contextSize: request.context_size || 256, batchSize: 256, threads: 1, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
  lora: request.lora ? {adapters: request.lora} : undefined,  // llama.cpp's LoRA adapters, applied at load
});
const sequence = context.getSequence();
const vocabSize = request.vocab_size;

async function logitsOf(ids) {
  await sequence.clearHistory();
  const input = ids.map((id) => [id, {generateNext: {logits: true}}]);
  const output = await sequence.controlledEvaluate(input);
  return output.map((item) => {
    const row = new Array(vocabSize).fill(null);
    for (const [token, logit] of item.next.logits) row[token] = logit;
    return row;
  });
}

async function greedy(ids, nGen, gbnf) {
  await sequence.clearHistory();
  const generated = [];
  if (nGen <= 0) return generated;
  const grammarEvaluationState = gbnf === undefined ? undefined
    : new LlamaGrammarEvaluationState({model, grammar: new LlamaGrammar(llama, {grammar: gbnf})});
  for await (const token of sequence.evaluate(ids, {temperature: 0, grammarEvaluationState, yieldEogToken: true})) {
    generated.push(token);
    if (generated.length >= nGen || model.isEogToken(token)) break;
  }
  return generated;
}

const results = [];
for (const job of request.jobs) {
  const result = {tokens: job.text === undefined ? null : Array.from(model.tokenize(job.text, true))};
  result.generated = job.ids ? await greedy(job.ids, job.n_gen || 0, job.grammar) : [];
  const rows = job.ids && (job.logits || job.argmax) ? await logitsOf(job.ids) : null;
  result.logits = job.logits ? rows : null;
  result.argmax = job.argmax ? rows.map((row) => row.reduce((best, logit, id) => (logit > row[best] ? id : best), 0))
    : null;
  results.push(result);
}
console.log(JSON.stringify({results}));
await context.dispose();
await model.dispose();
await llama.dispose();
