"""The Kinesis Data Streams API of a real `millrace serve`, driven by boto3, the AWS CLI and
a hand-built CBOR client. Run by `cargo test -p millrace-tools --test kinesis_api`.
"""

import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(__file__))
from harness import ACCESS_KEY, REGION, SECRET_KEY, Server  # noqa: E402

SERVER = None


def setUpModule():
    global SERVER
    SERVER = Server(ttl_secs=3, extra_args=["--subscription-secs", "4"]).start()


def tearDownModule():
    SERVER.close()


def hash_key(partition_key):
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


def owning_shard(shards, partition_key):
    key = hash_key(partition_key)
    found = [
        shard["ShardId"]
        for shard in shards
        if int(shard["HashKeyRange"]["StartingHashKey"]) <= key <= int(shard["HashKeyRange"]["EndingHashKey"])
        and "EndingSequenceNumber" not in shard["SequenceNumberRange"]
    ]
    assert len(found) == 1, found
    return found[0]


def read_all(client, stream, shard_id, iterator_type="TRIM_HORIZON", **kwargs):
    """Every record of a shard from a position, following NextShardIterator until caught up."""
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType=iterator_type, **kwargs
    )["ShardIterator"]
    records = []
    while iterator:
        answer = client.get_records(ShardIterator=iterator)
        records.extend(answer["Records"])
        iterator = answer.get("NextShardIterator")
        if not answer["Records"] and answer["MillisBehindLatest"] == 0:
            break
    return records


class Base(unittest.TestCase):
    stream_counter = 0

    def setUp(self):
        self.client = SERVER.client()

    def new_stream(self, shards=2, **kwargs):
        Base.stream_counter += 1
        name = f"{self.__class__.__name__}-{self._testMethodName}-{Base.stream_counter}"[:128]
        self.client.create_stream(StreamName=name, ShardCount=shards, **kwargs)
        return name

    def assertError(self, code, call, *args, **kwargs):
        with self.assertRaises(ClientError) as caught:
            call(*args, **kwargs)
        self.assertEqual(caught.exception.response["Error"]["Code"], code, caught.exception.response)
        return caught.exception.response


class StreamLifecycle(Base):
    def test_create_describe_list_delete(self):
        name = self.new_stream(shards=3, Tags={"team": "ingest"})
        self.client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1})
        description = self.client.describe_stream(StreamName=name)["StreamDescription"]
        self.assertEqual(description["StreamStatus"], "ACTIVE")
        self.assertEqual(description["StreamName"], name)
        self.assertEqual(description["StreamARN"], f"arn:aws:kinesis:{REGION}:000000000000:stream/{name}")
        self.assertEqual(description["RetentionPeriodHours"], 24)
        self.assertEqual(description["StreamModeDetails"]["StreamMode"], "PROVISIONED")
        self.assertEqual(len(description["Shards"]), 3)
        self.assertEqual(description["Shards"][0]["ShardId"], "shardId-000000000000")
        self.assertFalse(description["HasMoreShards"])
        # The ranges tile the whole 128-bit space, as Kinesis makes them.
        ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
                  for s in description["Shards"]]
        self.assertEqual(ranges[0][0], 0)
        self.assertEqual(ranges[-1][1], 2**128 - 1)
        for (_, end), (start, _) in zip(ranges, ranges[1:]):
            self.assertEqual(end + 1, start)
        # The creation time is a real timestamp, close to now.
        created = description["StreamCreationTimestamp"].timestamp()
        self.assertLess(abs(created - time.time()), 60)

        summary = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        self.assertEqual(summary["OpenShardCount"], 3)
        self.assertEqual(summary["ConsumerCount"], 0)
        self.assertEqual(summary["EncryptionType"], "NONE")
        self.assertIn(name, self.client.list_streams(Limit=10000)["StreamNames"])
        tags = self.client.list_tags_for_stream(StreamName=name)["Tags"]
        self.assertEqual(tags, [{"Key": "team", "Value": "ingest"}])

        self.client.delete_stream(StreamName=name)
        self.client.get_waiter("stream_not_exists").wait(StreamName=name, WaiterConfig={"Delay": 1})
        self.assertError("ResourceNotFoundException", self.client.describe_stream, StreamName=name)
        self.assertNotIn(name, self.client.list_streams(Limit=10000)["StreamNames"])

    def test_on_demand_streams_start_with_four_shards(self):
        Base.stream_counter += 1
        name = f"on-demand-{Base.stream_counter}"
        self.client.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
        summary = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        self.assertEqual(summary["StreamModeDetails"]["StreamMode"], "ON_DEMAND")
        self.assertEqual(summary["OpenShardCount"], 4)
        arn = summary["StreamARN"]
        self.client.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "PROVISIONED"})
        summary = self.client.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
        self.assertEqual(summary["StreamModeDetails"]["StreamMode"], "PROVISIONED")

    def test_errors_have_aws_shapes(self):
        name = self.new_stream(shards=1)
        response = self.assertError("ResourceInUseException", self.client.create_stream, StreamName=name, ShardCount=1)
        self.assertEqual(response["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertIn("already exists", response["Error"]["Message"])
        response = self.assertError("ResourceNotFoundException", self.client.describe_stream, StreamName="nope")
        self.assertIn("nope", response["Error"]["Message"])
        self.assertError("ValidationException", self.client.create_stream, StreamName="bad/name", ShardCount=1)
        self.assertError("ValidationException", self.client.create_stream, StreamName="zero", ShardCount=0)
        self.assertError("ValidationException", self.client.describe_stream, StreamName=name, Limit=0)
        self.assertError("ValidationException", self.client.list_streams, Limit=10001)
        self.assertError("InvalidArgumentException", self.client.describe_stream, StreamName=name,
                         StreamARN="arn:aws:kinesis:us-east-1:000000000000:stream/other")
        self.assertError("ResourceNotFoundException", self.client.get_shard_iterator, StreamName=name,
                         ShardId="shardId-000000000009", ShardIteratorType="LATEST")
        self.assertError("ValidationException", self.client.get_shard_iterator, StreamName=name,
                         ShardId="shardId-000000000000", ShardIteratorType="SIDEWAYS")
        self.assertError("InvalidArgumentException", self.client.get_shard_iterator, StreamName=name,
                         ShardId="shardId-000000000000", ShardIteratorType="AT_SEQUENCE_NUMBER")
        self.assertError("ValidationException", self.client.put_record, StreamName=name, Data=b"x", PartitionKey="")
        self.assertError("ValidationException", self.client.put_record, StreamName=name, Data=b"x",
                         PartitionKey="k" * 257)
        self.assertError("ValidationException", self.client.put_record, StreamName=name, Data=b"x",
                         PartitionKey="k", ExplicitHashKey="not-a-number")
        self.assertError("ValidationException", self.client.put_record, StreamName=name, Data=b"x" * (1024 * 1024 + 1),
                         PartitionKey="k")
        self.assertError("ValidationException", self.client.put_records, StreamName=name, Records=[])
        self.assertError("ValidationException", self.client.put_records, StreamName=name,
                         Records=[{"Data": b"x", "PartitionKey": "k"}] * 501)
        # None of that stored anything.
        self.assertEqual(read_all(self.client, name, "shardId-000000000000"), [])

    def test_stream_arn_is_accepted_in_place_of_the_name(self):
        name = self.new_stream(shards=1)
        arn = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        put = self.client.put_record(StreamARN=arn, Data=b"by-arn", PartitionKey="k")
        iterator = self.client.get_shard_iterator(StreamARN=arn, ShardId=put["ShardId"],
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records = self.client.get_records(ShardIterator=iterator, StreamARN=arn)["Records"]
        self.assertEqual([r["Data"] for r in records], [b"by-arn"])
        self.assertEqual(self.client.list_shards(StreamARN=arn)["Shards"][0]["ShardId"], "shardId-000000000000")


class Pagination(Base):
    def test_list_streams_pages_with_next_token(self):
        prefix = f"page-{time.time_ns()}"
        names = sorted(f"{prefix}-{i:02}" for i in range(7))
        for name in names:
            self.client.create_stream(StreamName=name, ShardCount=1)
        seen = []
        answer = self.client.list_streams(Limit=3, ExclusiveStartStreamName=prefix)
        while True:
            seen.extend(name for name in answer["StreamNames"] if name.startswith(prefix))
            self.assertEqual(len(answer["StreamSummaries"]), len(answer["StreamNames"]))
            if not answer["HasMoreStreams"]:
                break
            answer = self.client.list_streams(NextToken=answer["NextToken"], Limit=3)
        self.assertEqual(seen, names)
        # The paginator follows the same tokens.
        paged = [name for page in self.client.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 2})
                 for name in page["StreamNames"] if name.startswith(prefix)]
        self.assertEqual(paged, names)

    def test_list_shards_and_describe_stream_page(self):
        name = self.new_stream(shards=5)
        first = self.client.list_shards(StreamName=name, MaxResults=2)
        self.assertEqual([s["ShardId"] for s in first["Shards"]], ["shardId-000000000000", "shardId-000000000001"])
        second = self.client.list_shards(NextToken=first["NextToken"], MaxResults=2)
        third = self.client.list_shards(NextToken=second["NextToken"], MaxResults=2)
        self.assertEqual([s["ShardId"] for s in third["Shards"]], ["shardId-000000000004"])
        self.assertNotIn("NextToken", third)
        self.assertError("InvalidArgumentException", self.client.list_shards, StreamName=name,
                         NextToken=first["NextToken"])
        self.assertError("InvalidArgumentException", self.client.list_shards, NextToken="garbage!")
        page = self.client.describe_stream(StreamName=name, Limit=2, ExclusiveStartShardId="shardId-000000000001")
        description = page["StreamDescription"]
        self.assertEqual([s["ShardId"] for s in description["Shards"]],
                         ["shardId-000000000002", "shardId-000000000003"])
        self.assertTrue(description["HasMoreShards"])
        after = self.client.list_shards(StreamName=name, ShardFilter={"Type": "AFTER_SHARD_ID",
                                                                       "ShardId": "shardId-000000000003"})
        self.assertEqual([s["ShardId"] for s in after["Shards"]], ["shardId-000000000004"])


class Records(Base):
    def test_routing_matches_md5_and_binary_data_round_trips(self):
        name = self.new_stream(shards=4)
        shards = self.client.list_shards(StreamName=name)["Shards"]
        sent = {}
        for i in range(40):
            key = f"user-{i}"
            data = bytes(range(256)) + struct.pack("<I", i) + b"\x00\xff" * i
            put = self.client.put_record(StreamName=name, Data=data, PartitionKey=key)
            self.assertEqual(put["ShardId"], owning_shard(shards, key), key)
            self.assertEqual(put["EncryptionType"], "NONE")
            sent.setdefault(put["ShardId"], []).append((put["SequenceNumber"], key, data))
        for shard_id, expected in sent.items():
            records = read_all(self.client, name, shard_id)
            self.assertEqual([(r["SequenceNumber"], r["PartitionKey"], r["Data"]) for r in records], expected)
            sequences = [int(r["SequenceNumber"]) for r in records]
            self.assertEqual(sequences, sorted(sequences))
            arrival = records[0]["ApproximateArrivalTimestamp"].timestamp()
            self.assertLess(abs(arrival - time.time()), 60)

    def test_explicit_hash_key_routes(self):
        name = self.new_stream(shards=2)
        put = self.client.put_record(StreamName=name, Data=b"x", PartitionKey="a", ExplicitHashKey=str(2**128 - 1))
        self.assertEqual(put["ShardId"], "shardId-000000000001")
        put = self.client.put_record(StreamName=name, Data=b"x", PartitionKey="a", ExplicitHashKey="0")
        self.assertEqual(put["ShardId"], "shardId-000000000000")

    def test_one_mebibyte_records_round_trip(self):
        name = self.new_stream(shards=1)
        data = os.urandom(1024 * 1024 - 1)
        put = self.client.put_record(StreamName=name, Data=data, PartitionKey="k")
        records = read_all(self.client, name, put["ShardId"])
        self.assertEqual(len(records), 1)
        self.assertEqual(records[0]["Data"], data)

    def test_put_records_answers_per_entry_in_order(self):
        name = self.new_stream(shards=3)
        shards = self.client.list_shards(StreamName=name)["Shards"]
        entries = [{"Data": f"record-{i}".encode(), "PartitionKey": f"key-{i % 17}"} for i in range(500)]
        answer = self.client.put_records(StreamName=name, Records=entries)
        self.assertEqual(answer["FailedRecordCount"], 0)
        self.assertEqual(len(answer["Records"]), 500)
        by_shard = {}
        for entry, result in zip(entries, answer["Records"]):
            self.assertEqual(result["ShardId"], owning_shard(shards, entry["PartitionKey"]))
            by_shard.setdefault(result["ShardId"], []).append((result["SequenceNumber"], entry["Data"]))
        for shard_id, expected in by_shard.items():
            got = [(r["SequenceNumber"], r["Data"]) for r in read_all(self.client, name, shard_id)]
            self.assertEqual(got, expected)

    def test_iterator_types(self):
        name = self.new_stream(shards=1)
        shard = "shardId-000000000000"
        puts = [self.client.put_record(StreamName=name, Data=f"r{i}".encode(), PartitionKey="k") for i in range(5)]
        seqs = [p["SequenceNumber"] for p in puts]
        data = lambda records: [r["Data"] for r in records]  # noqa: E731
        self.assertEqual(data(read_all(self.client, name, shard)), [b"r0", b"r1", b"r2", b"r3", b"r4"])
        self.assertEqual(data(read_all(self.client, name, shard, "AT_SEQUENCE_NUMBER",
                                       StartingSequenceNumber=seqs[2])), [b"r2", b"r3", b"r4"])
        self.assertEqual(data(read_all(self.client, name, shard, "AFTER_SEQUENCE_NUMBER",
                                       StartingSequenceNumber=seqs[2])), [b"r3", b"r4"])
        latest = self.client.get_shard_iterator(StreamName=name, ShardId=shard,
                                                ShardIteratorType="LATEST")["ShardIterator"]
        self.assertEqual(self.client.get_records(ShardIterator=latest)["Records"], [])
        self.client.put_record(StreamName=name, Data=b"after-latest", PartitionKey="k")
        self.assertEqual(data(self.client.get_records(ShardIterator=latest)["Records"]), [b"after-latest"])
        stamp = time.time() + 0.05
        time.sleep(0.1)
        self.client.put_record(StreamName=name, Data=b"timed", PartitionKey="k")
        self.assertEqual(data(read_all(self.client, name, shard, "AT_TIMESTAMP", Timestamp=stamp)), [b"timed"])
        # Limit bounds the count; NextShardIterator continues.
        iterator = self.client.get_shard_iterator(StreamName=name, ShardId=shard,
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        first = self.client.get_records(ShardIterator=iterator, Limit=2)
        self.assertEqual(data(first["Records"]), [b"r0", b"r1"])
        self.assertGreaterEqual(first["MillisBehindLatest"], 0)
        second = self.client.get_records(ShardIterator=first["NextShardIterator"], Limit=2)
        self.assertEqual(data(second["Records"]), [b"r2", b"r3"])

    def test_iterators_are_tamper_evident_and_expire(self):
        name = self.new_stream(shards=1)
        self.client.put_record(StreamName=name, Data=b"x", PartitionKey="k")
        iterator = self.client.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        raw = bytearray(base64.b64decode(iterator))
        raw[20] ^= 1  # move the position
        forged = base64.b64encode(bytes(raw)).decode()
        self.assertError("InvalidArgumentException", self.client.get_records, ShardIterator=forged)
        self.assertError("InvalidArgumentException", self.client.get_records, ShardIterator="AAAA")
        # This server's iterators live 3 s (a test-only setting; AWS's are 5 min).
        time.sleep(3.5)
        response = self.assertError("ExpiredIteratorException", self.client.get_records, ShardIterator=iterator)
        self.assertIn("expired", response["Error"]["Message"].lower())

    def test_iterator_of_a_deleted_stream_is_not_found(self):
        name = self.new_stream(shards=1)
        iterator = self.client.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        self.client.delete_stream(StreamName=name)
        self.client.create_stream(StreamName=name, ShardCount=1)
        self.assertError("ResourceNotFoundException", self.client.get_records, ShardIterator=iterator)


class Resharding(Base):
    def test_split_then_merge_reads_parent_then_children(self):
        name = self.new_stream(shards=1)
        parent = "shardId-000000000000"
        before = [self.client.put_record(StreamName=name, Data=f"p{i}".encode(), PartitionKey=f"k{i}")
                  for i in range(10)]
        self.client.split_shard(StreamName=name, ShardToSplit=parent, NewStartingHashKey=str(2**127))
        shards = self.client.list_shards(StreamName=name)["Shards"]
        self.assertEqual(len(shards), 3)
        closed = [s for s in shards if s["ShardId"] == parent][0]
        self.assertIn("EndingSequenceNumber", closed["SequenceNumberRange"])
        children = [s for s in shards if s.get("ParentShardId") == parent]
        self.assertEqual(len(children), 2)
        after = [self.client.put_record(StreamName=name, Data=f"c{i}".encode(), PartitionKey=f"k{i}")
                 for i in range(10)]
        for put in after:
            self.assertIn(put["ShardId"], [c["ShardId"] for c in children])
            self.assertGreater(int(put["SequenceNumber"]), int(before[-1]["SequenceNumber"]))

        # Reading the parent to its end yields its records, then ChildShards and no iterator.
        iterator = self.client.get_shard_iterator(StreamName=name, ShardId=parent,
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        parent_records = []
        child_shards = None
        while iterator:
            answer = self.client.get_records(ShardIterator=iterator)
            parent_records.extend(answer["Records"])
            iterator = answer.get("NextShardIterator")
            child_shards = answer.get("ChildShards", child_shards)
        self.assertEqual([r["Data"] for r in parent_records], [f"p{i}".encode() for i in range(10)])
        self.assertEqual(sorted(c["ShardId"] for c in child_shards), sorted(c["ShardId"] for c in children))
        for child in child_shards:
            self.assertEqual(child["ParentShards"], [parent])
        child_data = sorted(r["Data"] for c in children for r in read_all(self.client, name, c["ShardId"]))
        self.assertEqual(child_data, sorted(f"c{i}".encode() for i in range(10)))

        low, high = sorted(c["ShardId"] for c in children)
        self.client.merge_shards(StreamName=name, ShardToMerge=low, AdjacentShardToMerge=high)
        open_shards = self.client.list_shards(StreamName=name, ShardFilter={"Type": "AT_LATEST"})["Shards"]
        self.assertEqual(len(open_shards), 1)
        merged = open_shards[0]
        self.assertEqual({merged["ParentShardId"], merged["AdjacentParentShardId"]}, {low, high})
        self.assertEqual(merged["HashKeyRange"]["StartingHashKey"], "0")
        self.assertEqual(merged["HashKeyRange"]["EndingHashKey"], str(2**128 - 1))
        everything = self.client.list_shards(StreamName=name, ShardFilter={"Type": "FROM_TRIM_HORIZON"})["Shards"]
        self.assertEqual(len(everything), 4)
        roots = self.client.list_shards(StreamName=name, ShardFilter={"Type": "AT_TRIM_HORIZON"})["Shards"]
        self.assertEqual([s["ShardId"] for s in roots], [parent])

    def test_update_shard_count(self):
        name = self.new_stream(shards=2)
        answer = self.client.update_shard_count(StreamName=name, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
        self.assertEqual((answer["CurrentShardCount"], answer["TargetShardCount"]), (2, 4))
        summary = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        self.assertEqual(summary["OpenShardCount"], 4)
        self.assertError("LimitExceededException", self.client.update_shard_count, StreamName=name,
                         TargetShardCount=9, ScalingType="UNIFORM_SCALING")
        self.assertError("ValidationException", self.client.update_shard_count, StreamName=name,
                         TargetShardCount=3, ScalingType="SIDEWAYS")
        self.assertError("InvalidArgumentException", self.client.split_shard, StreamName=name,
                         ShardToSplit="shardId-000000000000", NewStartingHashKey="1")


class Settings(Base):
    def test_retention(self):
        name = self.new_stream(shards=1)
        self.client.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
        self.assertEqual(self.client.describe_stream_summary(StreamName=name)
                         ["StreamDescriptionSummary"]["RetentionPeriodHours"], 48)
        self.assertError("InvalidArgumentException", self.client.increase_stream_retention_period,
                         StreamName=name, RetentionPeriodHours=36)
        self.assertError("InvalidArgumentException", self.client.decrease_stream_retention_period,
                         StreamName=name, RetentionPeriodHours=72)
        self.assertError("InvalidArgumentException", self.client.increase_stream_retention_period,
                         StreamName=name, RetentionPeriodHours=8761)
        self.client.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=24)
        self.assertError("InvalidArgumentException", self.client.decrease_stream_retention_period,
                         StreamName=name, RetentionPeriodHours=23)

    def test_tags_by_stream_and_by_resource(self):
        name = self.new_stream(shards=1)
        arn = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        self.client.add_tags_to_stream(StreamName=name, Tags={"b": "2", "a": "1", "c": ""})
        self.client.tag_resource(ResourceARN=arn, Tags={"d": "4"})
        first = self.client.list_tags_for_stream(StreamName=name, Limit=2)
        self.assertEqual(first["Tags"], [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
        self.assertTrue(first["HasMoreTags"])
        rest = self.client.list_tags_for_stream(StreamName=name, ExclusiveStartTagKey="b")
        self.assertEqual([t["Key"] for t in rest["Tags"]], ["c", "d"])
        self.assertFalse(rest["HasMoreTags"])
        self.client.remove_tags_from_stream(StreamName=name, TagKeys=["a"])
        self.client.untag_resource(ResourceARN=arn, TagKeys=["b"])
        tags = self.client.list_tags_for_resource(ResourceARN=arn)["Tags"]
        self.assertEqual([t["Key"] for t in tags], ["c", "d"])
        self.assertError("LimitExceededException", self.client.add_tags_to_stream, StreamName=name,
                         Tags={f"k{i}": "v" for i in range(49)})

    def test_consumers(self):
        name = self.new_stream(shards=1)
        arn = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        consumer = self.client.register_stream_consumer(StreamARN=arn, ConsumerName="reader")["Consumer"]
        self.assertEqual(consumer["ConsumerStatus"], "ACTIVE")
        self.assertTrue(consumer["ConsumerARN"].startswith(arn + "/consumer/reader:"))
        self.assertError("ResourceInUseException", self.client.register_stream_consumer, StreamARN=arn,
                         ConsumerName="reader")
        self.client.register_stream_consumer(StreamARN=arn, ConsumerName="auditor")
        by_arn = self.client.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
        self.assertEqual((by_arn["ConsumerName"], by_arn["StreamARN"]), ("reader", arn))
        by_name = self.client.describe_stream_consumer(StreamARN=arn, ConsumerName="reader")["ConsumerDescription"]
        self.assertEqual(by_name["ConsumerARN"], consumer["ConsumerARN"])
        page = self.client.list_stream_consumers(StreamARN=arn, MaxResults=1)
        self.assertEqual([c["ConsumerName"] for c in page["Consumers"]], ["auditor"])
        rest = self.client.list_stream_consumers(StreamARN=arn, NextToken=page["NextToken"])
        self.assertEqual([c["ConsumerName"] for c in rest["Consumers"]], ["reader"])
        self.assertEqual(self.client.describe_stream_summary(StreamName=name)
                         ["StreamDescriptionSummary"]["ConsumerCount"], 2)
        # A stream with consumers is deleted only when asked to delete them too.
        self.assertError("ResourceInUseException", self.client.delete_stream, StreamName=name)
        self.client.deregister_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
        self.assertError("ResourceNotFoundException", self.client.describe_stream_consumer,
                         ConsumerARN=consumer["ConsumerARN"])
        self.client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)

    def test_encryption_at_rest(self):
        name = self.new_stream(shards=1)
        shard = "shardId-000000000000"
        self.client.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")
        summary = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        self.assertEqual((summary["EncryptionType"], summary["KeyId"]), ("KMS", "alias/aws/kinesis"))
        secret = f"sealed-{time.time_ns()}-payload".encode()
        put = self.client.put_record(StreamName=name, Data=secret, PartitionKey="k")
        self.assertEqual(put["EncryptionType"], "KMS")
        self.assertError("InvalidArgumentException", self.client.stop_stream_encryption, StreamName=name,
                         EncryptionType="KMS", KeyId="another-key")
        self.client.stop_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")
        clear = f"clear-{time.time_ns()}-payload".encode()
        put = self.client.put_record(StreamName=name, Data=clear, PartitionKey="k")
        self.assertEqual(put["EncryptionType"], "NONE")
        records = read_all(self.client, name, shard)
        self.assertEqual([r["Data"] for r in records], [secret, clear])
        self.assertEqual(records[0].get("EncryptionType"), "KMS")
        # What reached the disk: the clear record is there, the sealed one is not.
        on_disk = b""
        for root, _, files in os.walk(os.path.join(SERVER.data_dir, "shards")):
            for file in files:
                with open(os.path.join(root, file), "rb") as handle:
                    on_disk += handle.read()
        self.assertIn(clear, on_disk)
        self.assertNotIn(secret, on_disk)
        self.assertError("ValidationException", self.client.start_stream_encryption, StreamName=name,
                         EncryptionType="AES", KeyId="k")

    def test_ten_mebibyte_records_after_update_max_record_size(self):
        name = self.new_stream(shards=1)
        arn = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        big = os.urandom(10 * 1024 * 1024 - 10)
        self.assertError("ValidationException", self.client.put_record, StreamName=name, Data=big, PartitionKey="k")
        self.client.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=10240)
        summary = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        self.assertEqual(summary["MaxRecordSizeInKiB"], 10240)
        put = self.client.put_record(StreamName=name, Data=big, PartitionKey="k")
        records = read_all(self.client, name, put["ShardId"])
        self.assertEqual(len(records), 1)
        self.assertEqual(records[0]["Data"], big)
        self.assertError("ValidationException", self.client.update_max_record_size, StreamARN=arn,
                         MaxRecordSizeInKiB=10241)

    def test_describe_limits(self):
        self.new_stream(shards=2)
        limits = self.client.describe_limits()
        self.assertGreaterEqual(limits["OpenShardCount"], 2)
        self.assertGreater(limits["ShardLimit"], 0)


class SubscribeToShard(Base):
    def subscribe(self, arn, shard, position):
        return self.client.subscribe_to_shard(ConsumerARN=arn, ShardId=shard, StartingPosition=position)

    def test_push_session_continuation_and_one_session_per_shard(self):
        name = self.new_stream(shards=1)
        shard = "shardId-000000000000"
        arn = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        consumer = self.client.register_stream_consumer(StreamARN=arn, ConsumerName="push")["Consumer"]["ConsumerARN"]
        first = [self.client.put_record(StreamName=name, Data=f"a{i}".encode(), PartitionKey="k") for i in range(3)]
        started = time.monotonic()
        events = self.subscribe(consumer, shard, {"Type": "TRIM_HORIZON"})["EventStream"]
        self.assertError("ResourceInUseException", self.subscribe, consumer, shard, {"Type": "LATEST"})
        received, continuation, put_more = [], None, True
        for event in events:
            body = event["SubscribeToShardEvent"]
            received.extend(body["Records"])
            continuation = body["ContinuationSequenceNumber"]
            self.assertGreaterEqual(body["MillisBehindLatest"], 0)
            if len(received) >= 3 and put_more:
                # Records stored while the session runs are pushed to it.
                put_more = False
                second = [self.client.put_record(StreamName=name, Data=f"b{i}".encode(), PartitionKey="k")
                          for i in range(2)]
        # The session ends on its own (4 s on this server; AWS: 5 min).
        self.assertGreaterEqual(time.monotonic() - started, 3.5)
        self.assertEqual([r["Data"] for r in received], [b"a0", b"a1", b"a2", b"b0", b"b1"])
        self.assertEqual([r["SequenceNumber"] for r in received],
                         [p["SequenceNumber"] for p in first + second])
        self.assertEqual(continuation, second[-1]["SequenceNumber"])
        # Resuming after the continuation delivers only what came later.
        self.client.put_record(StreamName=name, Data=b"c0", PartitionKey="k")
        events = self.subscribe(consumer, shard, {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": continuation})
        for event in events["EventStream"]:
            records = event["SubscribeToShardEvent"]["Records"]
            if records:
                self.assertEqual([r["Data"] for r in records], [b"c0"])
                break

    def test_an_empty_shard_gives_a_continuation_that_loses_nothing(self):
        name = self.new_stream(shards=1)
        shard = "shardId-000000000000"
        arn = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        consumer = self.client.register_stream_consumer(StreamARN=arn, ConsumerName="idle")["Consumer"]["ConsumerARN"]
        events = self.subscribe(consumer, shard, {"Type": "LATEST"})["EventStream"]
        body = next(iter(events))["SubscribeToShardEvent"]
        self.assertEqual(body["Records"], [])
        continuation = body["ContinuationSequenceNumber"]
        events.close()
        self.client.put_record(StreamName=name, Data=b"first", PartitionKey="k")
        time.sleep(0.2)  # the closed session notices its client is gone at its next event
        for attempt in range(30):
            try:
                events = self.subscribe(consumer, shard, {"Type": "AFTER_SEQUENCE_NUMBER",
                                                          "SequenceNumber": continuation})["EventStream"]
                break
            except ClientError:
                time.sleep(0.5)  # until the old session has ended (heartbeat: 5 s)
        for event in events:
            records = event["SubscribeToShardEvent"]["Records"]
            if records:
                self.assertEqual([r["Data"] for r in records], [b"first"])
                break

    def test_a_closed_shard_ends_with_child_shards(self):
        name = self.new_stream(shards=1)
        parent = "shardId-000000000000"
        arn = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        consumer = self.client.register_stream_consumer(StreamARN=arn, ConsumerName="split")["Consumer"]["ConsumerARN"]
        self.client.put_record(StreamName=name, Data=b"before", PartitionKey="k")
        self.client.split_shard(StreamName=name, ShardToSplit=parent, NewStartingHashKey=str(2**127))
        events = list(self.subscribe(consumer, parent, {"Type": "TRIM_HORIZON"})["EventStream"])
        records = [r["Data"] for e in events for r in e["SubscribeToShardEvent"]["Records"]]
        self.assertEqual(records, [b"before"])
        children = events[-1]["SubscribeToShardEvent"]["ChildShards"]
        self.assertEqual(sorted(c["ShardId"] for c in children), ["shardId-000000000001", "shardId-000000000002"])

    def test_errors(self):
        name = self.new_stream(shards=1)
        arn = self.client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        self.assertError("ResourceNotFoundException", self.subscribe, arn + "/consumer/ghost:1",
                         "shardId-000000000000", {"Type": "LATEST"})
        consumer = self.client.register_stream_consumer(StreamARN=arn, ConsumerName="c")["Consumer"]["ConsumerARN"]
        self.assertError("ResourceNotFoundException", self.subscribe, consumer, "shardId-000000000007",
                         {"Type": "LATEST"})
        self.assertError("InvalidArgumentException", self.subscribe, consumer, "shardId-000000000000",
                         {"Type": "AT_SEQUENCE_NUMBER"})


class Authentication(Base):
    def test_bad_signatures_are_refused_and_store_nothing(self):
        name = self.new_stream(shards=1)
        wrong_secret = SERVER.client(secret_key="not-the-secret")
        self.assertError("InvalidSignatureException", wrong_secret.put_record, StreamName=name, Data=b"forged",
                         PartitionKey="k")
        unknown = SERVER.client(access_key="AKIDUNKNOWN")
        self.assertError("UnrecognizedClientException", unknown.put_record, StreamName=name, Data=b"forged",
                         PartitionKey="k")
        # No signature at all.
        request = urllib.request.Request(
            SERVER.endpoint, method="POST",
            data=json.dumps({"StreamName": name, "Data": "Zm9yZ2Vk", "PartitionKey": "k"}).encode(),
            headers={"X-Amz-Target": "Kinesis_20131202.PutRecord", "Content-Type": "application/x-amz-json-1.1"})
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request)
        body = json.loads(caught.exception.read())
        self.assertEqual(body["__type"], "MissingAuthenticationTokenException")
        self.assertEqual(read_all(self.client, name, "shardId-000000000000"), [])


# --- CBOR, as the Java SDK speaks it --------------------------------------------------------

def cbor_encode(value):
    def head(major, argument):
        if argument < 24:
            return bytes([major << 5 | argument])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if argument < 1 << (8 * size):
                return bytes([major << 5 | info]) + argument.to_bytes(size, "big")
        raise ValueError(argument)

    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, str):
        encoded = value.encode()
        return head(3, len(encoded)) + encoded
    if isinstance(value, list):
        return head(4, len(value)) + b"".join(cbor_encode(item) for item in value)
    if isinstance(value, dict):
        # Indefinite-length, as Jackson's CBOR generator writes structures.
        return b"\xbf" + b"".join(cbor_encode(k) + cbor_encode(v) for k, v in value.items()) + b"\xff"
    if isinstance(value, tuple) and value[0] == "timestamp":
        return b"\xc1" + head(0, value[1])
    raise TypeError(value)


def cbor_decode(data):
    def item(at):
        initial = data[at]
        major, info = initial >> 5, initial & 0x1F
        at += 1
        if major == 7:
            if info == 20:
                return False, at
            if info == 21:
                return True, at
            if info == 22:
                return None, at
            if info == 27:
                return struct.unpack(">d", data[at:at + 8])[0], at + 8
            raise ValueError(info)
        if info < 24:
            argument = info
        else:
            size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
            argument = int.from_bytes(data[at:at + size], "big")
            at += size
        if major == 0:
            return argument, at
        if major == 1:
            return -1 - argument, at
        if major == 2:
            return data[at:at + argument], at + argument
        if major == 3:
            return data[at:at + argument].decode(), at + argument
        if major == 4:
            items = []
            for _ in range(argument):
                value, at = item(at)
                items.append(value)
            return items, at
        if major == 5:
            members = {}
            for _ in range(argument):
                key, at = item(at)
                members[key], at = item(at)
            return members, at
        if major == 6:
            value, at = item(at)
            return ("tag", argument, value), at
        raise ValueError(major)

    value, end = item(0)
    assert end == len(data)
    return value


def cbor_call(operation, body):
    request = AWSRequest(method="POST", url=SERVER.endpoint + "/", data=cbor_encode(body), headers={
        "X-Amz-Target": f"Kinesis_20131202.{operation}",
        "Content-Type": "application/x-amz-cbor-1.1",
    })
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "kinesis", REGION).add_auth(request)
    prepared = request.prepare()
    http_request = urllib.request.Request(prepared.url, data=prepared.body, method="POST",
                                          headers=dict(prepared.headers.items()))
    try:
        with urllib.request.urlopen(http_request) as response:
            return response.status, response.headers["Content-Type"], cbor_decode(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], cbor_decode(error.read())


class Cbor(Base):
    def test_cbor_put_and_get_with_millisecond_timestamps(self):
        name = self.new_stream(shards=1)
        before_ms = int(time.time() * 1000)
        status, content_type, answer = cbor_call("PutRecord", {
            "StreamName": name, "Data": b"\x00cbor\xff", "PartitionKey": "k"})
        self.assertEqual((status, content_type), (200, "application/x-amz-cbor-1.1"))
        self.assertEqual(answer["ShardId"], "shardId-000000000000")
        status, _, answer = cbor_call("GetShardIterator", {
            "StreamName": name, "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_TIMESTAMP",
            "Timestamp": ("timestamp", before_ms - 1000)})
        self.assertEqual(status, 200, answer)
        status, _, answer = cbor_call("GetRecords", {"ShardIterator": answer["ShardIterator"]})
        self.assertEqual(status, 200, answer)
        record = answer["Records"][0]
        self.assertEqual(record["Data"], b"\x00cbor\xff")  # a byte string, not base64
        tag, number, millis = record["ApproximateArrivalTimestamp"]
        self.assertEqual((tag, number), ("tag", 1))
        self.assertIsInstance(millis, int)
        self.assertLess(abs(millis - time.time() * 1000), 60_000)  # milliseconds, not seconds
        status, _, answer = cbor_call("DescribeStream", {"StreamName": "missing-stream"})
        self.assertEqual(status, 400)
        self.assertEqual(answer["__type"], "ResourceNotFoundException")


# --- The AWS CLI ---------------------------------------------------------------------------

class AwsCli(Base):
    def aws(self, *args):
        binary = shutil.which("aws", path=os.path.dirname(sys.executable)) or "aws"
        output = subprocess.run([binary, "--endpoint-url", SERVER.endpoint, "--output", "json", "kinesis", *args],
                                env=SERVER.cli_env(), capture_output=True, text=True, timeout=120)
        self.assertEqual(output.returncode, 0, output.stderr)
        return json.loads(output.stdout) if output.stdout.strip() else None

    def test_cli_create_put_read(self):
        Base.stream_counter += 1
        name = f"cli-{Base.stream_counter}"
        self.aws("create-stream", "--stream-name", name, "--shard-count", "2")
        self.aws("wait", "stream-exists", "--stream-name", name)
        # AWS CLI v1 (the one pip installs) sends --data as the raw text; v2 expects base64.
        put = self.aws("put-record", "--stream-name", name, "--partition-key", "k", "--data", "from the cli")
        self.assertIn(put["ShardId"], ["shardId-000000000000", "shardId-000000000001"])
        iterator = self.aws("get-shard-iterator", "--stream-name", name, "--shard-id", put["ShardId"],
                            "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
        records = self.aws("get-records", "--shard-iterator", iterator)["Records"]
        self.assertEqual(base64.b64decode(records[0]["Data"]), b"from the cli")
        self.assertIn(name, self.aws("list-streams")["StreamNames"])
        self.aws("delete-stream", "--stream-name", name)


# --- The millrace CLI ----------------------------------------------------------------------

class MillraceCli(Base):
    def millrace(self, *args, stdin=None):
        env = dict(os.environ, MILLRACE_ACCESS_KEY_ID=ACCESS_KEY, MILLRACE_SECRET_ACCESS_KEY=SECRET_KEY)
        output = subprocess.run([os.environ["MILLRACE_BIN"], *args, "--endpoint", SERVER.endpoint], env=env,
                                input=stdin, capture_output=True, text=True, timeout=120)
        self.assertEqual(output.returncode, 0, output.stderr)
        return output.stdout

    def test_stream_put_tail(self):
        Base.stream_counter += 1
        name = f"millrace-cli-{Base.stream_counter}"
        self.millrace("stream", "create", name, "--shards", "2")
        self.assertIn(name, self.millrace("stream", "list").split())
        lines = [f"line {i}" for i in range(50)]
        put = self.millrace("put", name, stdin="\n".join(lines) + "\n").split("\n")
        self.assertEqual(len([line for line in put if line.startswith("shardId-")]), 50)
        self.millrace("put", name, "--partition-key", "same", "one", "two")
        # The CLI's records are there for any client.
        got = sorted(r["Data"].decode() for shard in ("shardId-000000000000", "shardId-000000000001")
                     for r in read_all(self.client, name, shard))
        self.assertEqual(got, sorted(lines + ["one", "two"]))
        # Split, put more: tail reads parents, then children, every record once.
        self.client.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey="1000")
        self.millrace("put", name, "after split")
        tailed = self.millrace("tail", name, "--from", "trim-horizon", "--no-follow").splitlines()
        self.assertEqual(sorted(tailed), sorted(lines + ["one", "two", "after split"]))
        # Records of one partition key keep their order.
        self.assertLess(tailed.index("one"), tailed.index("two"))
        described = self.millrace("stream", "describe", name)
        self.assertIn("shardId-000000000003", described)
        self.assertIn("closed", described)
        self.millrace("stream", "delete", name)
        self.assertNotIn(name, self.millrace("stream", "list").split())


    def test_put_and_tail_over_quic(self):
        Base.stream_counter += 1
        name = f"millrace-quic-{Base.stream_counter}"
        self.millrace("stream", "create", name, "--shards", "2")
        quic = ["--quic", "--quic-endpoint", SERVER.quic_address, "--data-dir", SERVER.data_dir]
        lines = [f"quic line {i}" for i in range(40)]
        sequences = self.millrace("put", name, *quic, stdin="\n".join(lines) + "\n").split()
        self.assertEqual(len(sequences), 40)
        tailed = self.millrace("tail", name, "--from", "trim-horizon", "--no-follow", *quic).splitlines()
        self.assertEqual(sorted(tailed), sorted(lines))
        # What went in over QUIC is there for the HTTP API too, under the same sequence numbers.
        over_http = {r["SequenceNumber"]: r["Data"].decode() for shard in ("shardId-000000000000", "shardId-000000000001")
                     for r in read_all(self.client, name, shard)}
        self.assertEqual(sorted(over_http), sorted(sequences))
        self.assertEqual(sorted(over_http.values()), sorted(lines))


# --- Emulated limits and restarts use servers of their own ---------------------------------

class OwnServers(unittest.TestCase):
    def test_emulated_limits_throttle_per_shard(self):
        server = Server(extra_args=["--emulate-limits"]).start()
        try:
            client = server.client()
            client.create_stream(StreamName="limited", ShardCount=1)
            entries = [{"Data": b"x" * 100, "PartitionKey": f"k{i}"} for i in range(500)]
            failed = 0
            for _ in range(4):
                answer = client.put_records(StreamName="limited", Records=entries)
                failed += answer["FailedRecordCount"]
                for result in answer["Records"]:
                    if "ErrorCode" in result:
                        self.assertEqual(result["ErrorCode"], "ProvisionedThroughputExceededException")
            # 2,000 records in well under two seconds against 1,000 records/s: some fail.
            self.assertGreater(failed, 0)
            stored = read_all(client, "limited", "shardId-000000000000")
            self.assertEqual(len(stored), 2000 - failed)
        finally:
            server.close()

    def test_records_survive_a_restart(self):
        server = Server().start()
        try:
            client = server.client()
            client.create_stream(StreamName="durable", ShardCount=3)
            # Half of it sealed: the key in the data directory must open it after the restart.
            client.start_stream_encryption(StreamName="durable", EncryptionType="KMS", KeyId="restart-key")
            entries = [{"Data": f"d{i}".encode() * 10, "PartitionKey": f"p{i}"} for i in range(300)]
            answer = client.put_records(StreamName="durable", Records=entries)
            self.assertEqual(answer["FailedRecordCount"], 0)
            client.stop_stream_encryption(StreamName="durable", EncryptionType="KMS", KeyId="restart-key")
            single = client.put_record(StreamName="durable", Data=b"single", PartitionKey="s")
            client.add_tags_to_stream(StreamName="durable", Tags={"kept": "yes"})
        finally:
            server.stop()
        server.start()
        try:
            client = server.client()
            expected = {}
            for entry, result in zip(entries, answer["Records"]):
                expected.setdefault(result["ShardId"], []).append((result["SequenceNumber"], entry["Data"]))
            expected[single["ShardId"]].append((single["SequenceNumber"], b"single"))
            for shard_id, records in expected.items():
                got = [(r["SequenceNumber"], r["Data"]) for r in read_all(client, "durable", shard_id)]
                self.assertEqual(got, records)
            self.assertEqual(client.list_tags_for_stream(StreamName="durable")["Tags"],
                             [{"Key": "kept", "Value": "yes"}])
            # New records continue above the old ones.
            after = client.put_record(StreamName="durable", Data=b"after", PartitionKey="s")
            self.assertGreater(int(after["SequenceNumber"]), int(single["SequenceNumber"]))
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
