// The official JS client against a keel (or langgraph dev) URL: prints one JSON report.
// Usage: node conformance.mjs URL [API_KEY]
import { Client } from "@langchain/langgraph-sdk";

const [url, apiKey] = process.argv.slice(2);
const client = new Client({ apiUrl: url, apiKey: apiKey || undefined });
const input = {
  messages: [{ role: "user", content: "How does keel avoid duplicate chunks when ingesting twice?" }],
};
const context = { use_cache: false };

const thread = await client.threads.create({ metadata: { suite: "js" } });
const streamed = [];
for await (const part of client.runs.stream(thread.thread_id, "keel", {
  input,
  context,
  streamMode: ["updates", "messages-tuple"],
})) {
  streamed.push({ id: part.id ?? null, event: part.event, data: part.data });
}
const runId = streamed[0].data.run_id;
const cut = 3;
const rejoined = [];
for await (const part of client.runs.joinStream(thread.thread_id, runId, {
  lastEventId: streamed[cut].id,
})) {
  rejoined.push({ id: part.id ?? null, event: part.event, data: part.data });
}
const history = await client.threads.getHistory(thread.thread_id, { limit: 100 });
const update = await client.threads.updateState(thread.thread_id, {
  values: { answer: "edited by js" },
  asNode: "generate",
});
const state = await client.threads.getState(thread.thread_id);
console.log(
  JSON.stringify({ threadId: thread.thread_id, runId, cut, streamed, rejoined, history, update, state }),
);
