// llama.cpp's side of tests/oracle/test_model_check.py: does llama.cpp load each GGUF file, and what does it log?
//
//   node tests/support/llama_cpp_load.mjs < paths.json          (run from the repository root)
//
// Prints one JSON line: [{"path", "loaded": true|false, "log": [llama.cpp's error and warning lines]}, ...]
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const paths = JSON.parse(Buffer.concat(chunks).toString("utf8"));

let log = [];
const llama = await getLlama({
  gpu: false, build: "never", logLevel: LlamaLogLevel.warn,
  logger: (level, message) => log.push(String(message).trim()),
});
const results = [];
for (const path of paths) {
  log = [];
  let loaded = false;
  try {
    const model = await llama.loadModel({modelPath: path});
    loaded = true;
    await model.dispose();
  } catch (error) {
    log.push(String(error && error.message));
  }
  await new Promise((resolve) => setTimeout(resolve, 200));  // llama.cpp's log lines arrive after the error
  results.push({path, loaded, log});
}
console.log(JSON.stringify(results));
