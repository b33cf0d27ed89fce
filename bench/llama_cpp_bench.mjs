// llama.cpp side of bench/bench_native.py: time one prompt and a fixed number of greedy tokens on the CPU.
//
//   node bench/llama_cpp_bench.mjs MODEL.gguf '[1, 9690, ...]' N_GEN THREADS REPEATS
//
// Prints one JSON line: {prompt_tokens, generated_tokens, tokens, threads, runs: [{prompt_seconds,
// generation_seconds}, ...]} for REPEATS timed runs that follow one untimed warm-up run.
// The prompt timing ends when the first token is sampled (prompt evaluation + one sample, as on our side);
// generation covers the following N_GEN - 1 tokens, each a single-token decode. End-of-generation tokens do
// not stop the run (yieldEogToken), so both engines always decode the same number of tokens.
import {getLlama} from "node-llama-cpp";

const [modelPath, promptJson, nGenArg, threadsArg, repeatsArg] = process.argv.slice(2);
if (!modelPath || !promptJson) {
  console.error("usage: node llama_cpp_bench.mjs MODEL.gguf PROMPT_IDS_JSON [N_GEN] [THREADS]");
  process.exit(2);
}
const promptIds = JSON.parse(promptJson);
const nGen = Number(nGenArg || 64);
const threads = Number(threadsArg || 2);
const repeats = Number(repeatsArg || 3);

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({
  contextSize: promptIds.length + nGen + 16, batchSize: Math.max(512, promptIds.length), threads,
});
const sequence = context.getSequence();

async function timedRun() {
  await sequence.clearHistory();
  const tokens = [];
  const start = performance.now();
  let firstTokenAt = 0;
  for await (const token of sequence.evaluate(promptIds, {temperature: 0, yieldEogToken: true})) {
    if (tokens.length === 0) firstTokenAt = performance.now();
    tokens.push(token);
    if (tokens.length >= nGen) break;
  }
  const end = performance.now();
  return {tokens, promptSeconds: (firstTokenAt - start) / 1000, generationSeconds: (end - firstTokenAt) / 1000};
}

await timedRun();  // warm-up: first-use allocations and page faults
const runs = [];
for (let i = 0; i < repeats; i++) runs.push(await timedRun());

console.log(JSON.stringify({
  prompt_tokens: promptIds.length,
  generated_tokens: runs[0].tokens.length - 1,
  tokens: runs[0].tokens,
  threads: context.currentThreads,
  runs: runs.map((r) => ({prompt_seconds: r.promptSeconds, generation_seconds: r.generationSeconds})),
}));
await context.dispose();
await model.dispose();
await llama.dispose();
