// The official JS client against two keel replicas on one Postgres: a run streamed from A and
// joined on B after a last event id, and runs.delete (409 while the run runs, then gone).
// Usage: node replicas.mjs URL_A URL_B; prints one JSON report.
import { Client } from "@langchain/langgraph-sdk";

const [urlA, urlB] = process.argv.slice(2);
const a = new Client({ apiUrl: urlA });
const b = new Client({ apiUrl: urlB });
const input = {
  messages: [{ role: "user", content: "How does keel avoid duplicate chunks when ingesting twice?" }],
};
const context = { use_cache: false };
const frame = (part) => ({ id: part.id ?? null, event: part.event, data: part.data });

async function failure(call) {
  try {
    await call();
    return null;
  } catch (error) {
    return error.status ?? error.response?.status ?? String(error);
  }
}

const thread = await a.threads.create();
const cut = 5;
const seen = [];
for await (const part of a.runs.stream(thread.thread_id, "keel", {
  input,
  context,
  streamMode: ["updates", "messages-tuple"],
})) {
  seen.push(frame(part));
  if (seen.length === cut + 1) break; // drop the connection to A; the run goes on there
}
const runId = seen[0].data.run_id;
const rest = [];
for await (const part of b.runs.joinStream(thread.thread_id, runId, {
  lastEventId: seen[cut].id,
})) {
  rest.push(frame(part));
}
const whole = [];
for await (const part of b.runs.joinStream(thread.thread_id, runId, { lastEventId: "-1" })) {
  whole.push(frame(part));
}

const running = await a.runs.create(thread.thread_id, "keel", { input, context });
const whileRunning = await failure(() => b.runs.delete(thread.thread_id, running.run_id));
await b.runs.join(thread.thread_id, running.run_id);
await b.runs.delete(thread.thread_id, running.run_id);
const afterDelete = await failure(() => a.runs.get(thread.thread_id, running.run_id));
const runs = (await a.runs.list(thread.thread_id)).map((run) => run.run_id);
console.log(
  JSON.stringify({ runId, cut, seen, rest, whole, deletedRunId: running.run_id, whileRunning, afterDelete, runs }),
);
