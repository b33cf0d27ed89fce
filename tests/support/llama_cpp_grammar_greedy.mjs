// llama.cpp's side of tests/oracle/test_grammar_llama_cpp_greedy.py: greedy decoding under a GBNF grammar,
// through node-llama-cpp on the CPU (LlamaGrammar + LlamaGrammarEvaluationState; its sampler checks the
// top token first and applies the grammar only when that token is refused, as our sampling.py does).
//
//   node tests/support/llama_cpp_grammar_greedy.mjs < request.json          (run from the repository root)
//
// request: {"model": PATH, "jobs": [{"ids": [...], "grammar": GBNF, "n_gen": N}, ...]}
// Prints one JSON line: {"results": [{"generated": [ids...]}, ...]}: up to n_gen ids (temperature 0, no
// repeat penalty), the end-of-generation token included when one ends the output.
import {getLlama, LlamaGrammar, LlamaGrammarEvaluationState} from "node-llama-cpp";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: request.model});
// F32 KV cache and no flash attention, as llama_cpp_greedy.mjs: llama.cpp's default F16 cache rounds keys
// and values enough to flip near-ties
const context = await model.createContext({
  contextSize: 512, batchSize: 256, threads: 1, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const sequence = context.getSequence();

const results = [];
for (const job of request.jobs) {
  await sequence.clearHistory();
  const grammar = new LlamaGrammar(llama, {grammar: job.grammar});
  const grammarEvaluationState = new LlamaGrammarEvaluationState({model, grammar});
  const generated = [];
  for await (const token of sequence.evaluate(job.ids, {temperature: 0, grammarEvaluationState, yieldEogToken: true})) {
    generated.push(token);
    if (generated.length >= job.n_gen || model.isEogToken(token)) break;
  }
  results.push({generated});
}
console.log(JSON.stringify({results}));
await context.dispose();
await model.dispose();
await llama.dispose();
