// The AWS SDK for JavaScript v3, as a new user runs it: the stock @aws-sdk/client-kinesis
// client with its default request handler (HTTP/2, which signs `:authority` and sends no
// `host`) and SigV4, against a real `millrace serve` (MILLRACE_ENDPOINT, credentials in the
// environment). Create, put, get, a split read through to the children, and an HTTP/2
// SubscribeToShard session that ends and is resumed from its ContinuationSequenceNumber.
// Exits non-zero, with the reason, on the first thing that is not as AWS does it.
import assert from "node:assert/strict";
import {
  KinesisClient,
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  PutRecordCommand,
  PutRecordsCommand,
  ListShardsCommand,
  GetShardIteratorCommand,
  GetRecordsCommand,
  SplitShardCommand,
  RegisterStreamConsumerCommand,
  DescribeStreamConsumerCommand,
  SubscribeToShardCommand,
} from "@aws-sdk/client-kinesis";
import { NodeHttp2Handler } from "@smithy/node-http-handler";

const client = new KinesisClient({
  endpoint: process.env.MILLRACE_ENDPOINT,
  region: "us-east-1",
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID,
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
  },
  maxAttempts: 1,
});
// The default handler is the one under test: make sure it is HTTP/2.
assert.ok(client.config.requestHandler instanceof NodeHttp2Handler, "the default handler speaks HTTP/2");

const stream = "js-sdk";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function readShard(shardId, type = "TRIM_HORIZON") {
  const { ShardIterator } = await client.send(
    new GetShardIteratorCommand({ StreamName: stream, ShardId: shardId, ShardIteratorType: type }),
  );
  let iterator = ShardIterator;
  const records = [];
  let children = [];
  while (iterator) {
    const answer = await client.send(new GetRecordsCommand({ ShardIterator: iterator }));
    records.push(...answer.Records.map((record) => decoder.decode(record.Data)));
    children = answer.ChildShards ?? [];
    if (answer.Records.length === 0 && (answer.MillisBehindLatest === 0 || children.length > 0)) {
      break;
    }
    iterator = answer.NextShardIterator;
  }
  return { records, children, iterator };
}

// Create and wait for ACTIVE, as the SDK's users do.
await client.send(new CreateStreamCommand({ StreamName: stream, ShardCount: 1 }));
const { StreamDescriptionSummary: summary } = await client.send(
  new DescribeStreamSummaryCommand({ StreamName: stream }),
);
assert.equal(summary.StreamStatus, "ACTIVE");
assert.ok(summary.StreamCreationTimestamp instanceof Date, "timestamps decode as dates");
const streamArn = summary.StreamARN;

// Put: one record, then a batch.
const first = await client.send(
  new PutRecordCommand({ StreamName: stream, PartitionKey: "k0", Data: encoder.encode("record-0") }),
);
assert.equal(first.ShardId, "shardId-000000000000");
const batch = await client.send(
  new PutRecordsCommand({
    StreamName: stream,
    Records: Array.from({ length: 9 }, (_, index) => ({
      PartitionKey: `k${index + 1}`,
      Data: encoder.encode(`record-${index + 1}`),
    })),
  }),
);
assert.equal(batch.FailedRecordCount, 0);
assert.equal(batch.Records.length, 9);

// Get them back, in order.
const before = await readShard("shardId-000000000000");
assert.deepEqual(before.records, Array.from({ length: 10 }, (_, index) => `record-${index}`));

// Split: the parent closes, its children take new records, and a reader of the parent
// ends with ChildShards.
const { Shards: shards } = await client.send(new ListShardsCommand({ StreamName: stream }));
const start = BigInt(shards[0].HashKeyRange.StartingHashKey);
const end = BigInt(shards[0].HashKeyRange.EndingHashKey);
await client.send(
  new SplitShardCommand({
    StreamName: stream,
    ShardToSplit: "shardId-000000000000",
    NewStartingHashKey: ((start + end) / 2n).toString(),
  }),
);
const { Shards: after } = await client.send(new ListShardsCommand({ StreamName: stream }));
assert.equal(after.length, 3);
assert.ok(after[0].SequenceNumberRange.EndingSequenceNumber, "the parent is closed");
for (let index = 10; index < 20; index++) {
  const put = await client.send(
    new PutRecordCommand({ StreamName: stream, PartitionKey: `k${index}`, Data: encoder.encode(`record-${index}`) }),
  );
  assert.notEqual(put.ShardId, "shardId-000000000000", "a closed shard takes no records");
}
const parent = await readShard("shardId-000000000000");
assert.equal(parent.records.length, 10);
assert.deepEqual(parent.children.map((child) => child.ShardId).sort(), ["shardId-000000000001", "shardId-000000000002"]);
const childRecords = [
  ...(await readShard("shardId-000000000001")).records,
  ...(await readShard("shardId-000000000002")).records,
];
assert.equal(childRecords.length, 10);

// SubscribeToShard over HTTP/2: a session (the server is started with short sessions), then
// a resubscription from its ContinuationSequenceNumber gets only what came after.
const { Consumer } = await client.send(new RegisterStreamConsumerCommand({ StreamARN: streamArn, ConsumerName: "js" }));
for (let tries = 0; ; tries++) {
  const { ConsumerDescription } = await client.send(
    new DescribeStreamConsumerCommand({ ConsumerARN: Consumer.ConsumerARN }),
  );
  if (ConsumerDescription.ConsumerStatus === "ACTIVE") break;
  assert.ok(tries < 50, "the consumer becomes ACTIVE");
  await sleep(100);
}
const shardId = "shardId-000000000001";

async function subscribe(startingPosition, expect, putWhileOpen) {
  // One session per consumer and shard: a new one right after the last ended may meet it
  // still closing (ResourceInUseException, as AWS answers); a client tries again.
  let EventStream;
  for (let tries = 0; ; tries++) {
    try {
      ({ EventStream } = await client.send(
        new SubscribeToShardCommand({ ConsumerARN: Consumer.ConsumerARN, ShardId: shardId, StartingPosition: startingPosition }),
      ));
      if (tries > 0) console.log(`subscribed after ${tries} tries`);
      break;
    } catch (error) {
      if (error.name !== "ResourceInUseException" || tries >= 100) throw error;
      await sleep(100);
    }
  }
  const seen = [];
  let continuation;
  let putDone = false;
  for await (const event of EventStream) {
    if (!event.SubscribeToShardEvent) {
      throw new Error(`unexpected event ${JSON.stringify(Object.keys(event))}`);
    }
    const { Records, ContinuationSequenceNumber } = event.SubscribeToShardEvent;
    seen.push(...Records.map((record) => decoder.decode(record.Data)));
    continuation = ContinuationSequenceNumber;
    if (!putDone && putWhileOpen) {
      putDone = true;
      await putWhileOpen();
    }
    if (seen.length >= expect) break;
  }
  return { seen, continuation };
}

const existing = (await readShard(shardId)).records;
const session = await subscribe({ Type: "TRIM_HORIZON" }, existing.length + 1, async () => {
  // Pushed while the session is open.
  await client.send(
    new PutRecordCommand({ StreamName: stream, PartitionKey: "pushed", ExplicitHashKey: start.toString(), Data: encoder.encode("pushed-live") }),
  );
});
assert.deepEqual(session.seen, [...existing, "pushed-live"]);
assert.ok(session.continuation, "events carry a ContinuationSequenceNumber");
// After the first session: more records, and a new session resumes after the last one seen.
await client.send(
  new PutRecordCommand({ StreamName: stream, PartitionKey: "later", ExplicitHashKey: start.toString(), Data: encoder.encode("after-resume") }),
);
const resumed = await subscribe({ Type: "AFTER_SEQUENCE_NUMBER", SequenceNumber: session.continuation }, 1);
assert.deepEqual(resumed.seen, ["after-resume"], "resumed exactly after the continuation");

client.destroy();
console.log("js sdk: ok");
// The abandoned first session's HTTP/2 stream can keep the event loop alive; the test is done.
process.exit(0);
