"""Amazon Data Firehose on a real `millrace serve`, driven by boto3 and the AWS CLI, delivering
to a real S3-compatible server (moto's server mode) and to the embedded local-folder default;
objects are read back with boto3's S3 client and the standard decoders (gzip, zipfile,
python-snappy). Run by `cargo test -p millrace-tools --test firehose_api`.
"""

import base64
import gzip
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zipfile

import boto3
import snappy
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "kinesis"))
from harness import REGION, Server  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/firehose"
S3_KEY, S3_SECRET = "moto-access", "moto-secret"
# <stream>-<version>-YYYY-MM-DD-HH-MM-SS-<uuid v4><extension>
SUFFIX = r"-1-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"

MOTO = None
SERVER = None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Moto:
    """moto's S3 in server mode, as a real S3-compatible endpoint."""

    def __init__(self):
        self.port = free_port()
        binary = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def s3(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
            config=Config(s3={"addressing_style": "path"}),
        )

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def firehose_server(data_dir=None, s3=True):
    os.environ["MILLRACE_S3_ACCESS_KEY_ID"] = S3_KEY
    os.environ["MILLRACE_S3_SECRET_ACCESS_KEY"] = S3_SECRET
    extra = ["--s3-endpoint", MOTO.endpoint] if s3 else []
    return Server(data_dir=data_dir, extra_args=extra).start()


class LambdaApi:
    """A local server of Lambda's Invoke API (`POST /2015-03-31/functions/NAME/invocations`),
    running three functions: `upper` (upper-cases; drops records containing "drop", fails
    those containing "fail"), `broken` (a function error every time) and `forgetful` (leaves
    out the first record id)."""

    def __init__(self):
        self.events = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                found = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", self.path)
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.events.append((found.group(1) if found else None, dict(self.headers), event))
                headers, status = {}, 200
                if not found:
                    status, answer = 404, {"Type": "User", "message": "Function not found"}
                elif found.group(1) == "broken":
                    headers["X-Amz-Function-Error"] = "Unhandled"
                    answer = {"errorMessage": "boom", "errorType": "Error"}
                else:
                    results = []
                    for record in event["records"]:
                        data = base64.b64decode(record["data"])
                        result = "Dropped" if b"drop" in data else "ProcessingFailed" if b"fail" in data else "Ok"
                        results.append({"recordId": record["recordId"], "result": result,
                                        "data": base64.b64encode(data.upper()).decode()})
                    if found.group(1) == "forgetful":
                        results = results[1:]
                    if found.group(1) == "keyed":
                        for result, record in zip(results, event["records"]):
                            data = base64.b64decode(record["data"])
                            result["data"] = record["data"]
                            result["metadata"] = {"partitionKeys": {"k": data[:1].decode()}}
                    answer = {"records": results}
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


LAMBDA = None


def setUpModule():
    global MOTO, SERVER, LAMBDA
    MOTO = Moto()
    LAMBDA = LambdaApi()
    os.environ["MILLRACE_LAMBDA_ENDPOINT"] = LAMBDA.url
    SERVER = firehose_server()
    start_dynamic_partitioning()


def tearDownModule():
    SERVER.close()
    MOTO.close()
    LAMBDA.close()


def s3_destination(bucket, **extra):
    config = {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}"}
    config.update(extra)
    return config


def wait_for(predicate, timeout=30, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


class Base(unittest.TestCase):
    def setUp(self):
        self.firehose = SERVER.client(service="firehose")
        self.s3 = MOTO.s3()

    def bucket(self, name):
        self.s3.create_bucket(Bucket=name)
        return name

    def objects(self, bucket):
        listing = self.s3.list_objects_v2(Bucket=bucket)
        return sorted((item["Key"] for item in listing.get("Contents", [])))

    def read(self, bucket, key):
        answer = self.s3.get_object(Bucket=bucket, Key=key)
        return answer["Body"].read(), answer.get("ContentEncoding")

    def create(self, name, bucket, **config):
        self.firehose.create_delivery_stream(
            DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_destination(bucket, **config)
        )
        self.addCleanup(self.delete_quietly, name)

    def delete_quietly(self, name):
        try:
            self.firehose.delete_delivery_stream(DeliveryStreamName=name)
        except ClientError:
            pass

    def error(self, call, **kwargs):
        with self.assertRaises(ClientError) as caught:
            call(**kwargs)
        return caught.exception.response["Error"]["Code"], caught.exception.response["Error"]["Message"]


class Operations(Base):
    def test_create_describe_fills_aws_defaults(self):
        self.create("ops-defaults", "unused-bucket")
        description = self.firehose.describe_delivery_stream(DeliveryStreamName="ops-defaults")[
            "DeliveryStreamDescription"
        ]
        self.assertEqual(description["DeliveryStreamARN"],
                         "arn:aws:firehose:us-east-1:000000000000:deliverystream/ops-defaults")
        self.assertIn(description["DeliveryStreamStatus"], ("CREATING", "ACTIVE"))
        self.assertEqual(description["DeliveryStreamType"], "DirectPut")
        self.assertEqual(description["VersionId"], "1")
        self.assertEqual(description["DeliveryStreamEncryptionConfiguration"], {"Status": "DISABLED"})
        self.assertFalse(description["HasMoreDestinations"])
        [destination] = description["Destinations"]
        self.assertEqual(destination["DestinationId"], "destinationId-000000000001")
        extended = destination["ExtendedS3DestinationDescription"]
        self.assertEqual(extended["BufferingHints"], {"SizeInMBs": 5, "IntervalInSeconds": 300})
        self.assertEqual(extended["CompressionFormat"], "UNCOMPRESSED")
        self.assertEqual(extended["EncryptionConfiguration"], {"NoEncryptionConfig": "NoEncryption"})
        self.assertEqual(extended["CloudWatchLoggingOptions"], {"Enabled": False})
        self.assertEqual(extended["S3BackupMode"], "Disabled")
        self.assertNotIn("Prefix", extended)
        self.assertNotIn("S3BackupMode", destination["S3DestinationDescription"])
        self.assertTrue(wait_for(lambda: self.firehose.describe_delivery_stream(DeliveryStreamName="ops-defaults")[
            "DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE", timeout=10))

    def test_legacy_s3_destination(self):
        self.firehose.create_delivery_stream(
            DeliveryStreamName="ops-legacy", S3DestinationConfiguration=s3_destination("legacy-bucket")
        )
        self.addCleanup(self.delete_quietly, "ops-legacy")
        [destination] = self.firehose.describe_delivery_stream(DeliveryStreamName="ops-legacy")[
            "DeliveryStreamDescription"]["Destinations"]
        self.assertEqual(destination["S3DestinationDescription"]["BucketARN"], "arn:aws:s3:::legacy-bucket")

    def test_list_pages_and_filters_by_type(self):
        for name in ("list-a", "list-b", "list-c"):
            self.create(name, "unused-bucket")
        first = self.firehose.list_delivery_streams(Limit=2, ExclusiveStartDeliveryStreamName="list-")
        self.assertEqual(first["DeliveryStreamNames"], ["list-a", "list-b"])
        self.assertTrue(first["HasMoreDeliveryStreams"])
        rest = self.firehose.list_delivery_streams(ExclusiveStartDeliveryStreamName="list-b")
        self.assertIn("list-c", rest["DeliveryStreamNames"])
        self.assertNotIn("list-b", rest["DeliveryStreamNames"])
        direct = self.firehose.list_delivery_streams(DeliveryStreamType="DirectPut", Limit=10000)
        self.assertIn("list-a", direct["DeliveryStreamNames"])
        kinesis = self.firehose.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource", Limit=10000)
        self.assertNotIn("list-a", kinesis["DeliveryStreamNames"])

    def test_tags(self):
        self.firehose.create_delivery_stream(
            DeliveryStreamName="ops-tags", ExtendedS3DestinationConfiguration=s3_destination("unused-bucket"),
            Tags=[{"Key": "team", "Value": "data"}],
        )
        self.addCleanup(self.delete_quietly, "ops-tags")
        self.firehose.tag_delivery_stream(
            DeliveryStreamName="ops-tags", Tags=[{"Key": "env", "Value": "ci"}, {"Key": "team", "Value": "lake"}]
        )
        tags = self.firehose.list_tags_for_delivery_stream(DeliveryStreamName="ops-tags")
        self.assertEqual(tags["Tags"], [{"Key": "env", "Value": "ci"}, {"Key": "team", "Value": "lake"}])
        self.assertFalse(tags["HasMoreTags"])
        page = self.firehose.list_tags_for_delivery_stream(DeliveryStreamName="ops-tags", Limit=1)
        self.assertEqual((len(page["Tags"]), page["HasMoreTags"]), (1, True))
        after = self.firehose.list_tags_for_delivery_stream(DeliveryStreamName="ops-tags", ExclusiveStartTagKey="env")
        self.assertEqual(after["Tags"], [{"Key": "team", "Value": "lake"}])
        self.firehose.untag_delivery_stream(DeliveryStreamName="ops-tags", TagKeys=["env", "absent"])
        tags = self.firehose.list_tags_for_delivery_stream(DeliveryStreamName="ops-tags")["Tags"]
        self.assertEqual(tags, [{"Key": "team", "Value": "lake"}])
        code, _ = self.error(self.firehose.tag_delivery_stream, DeliveryStreamName="ops-tags",
                             Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
        self.assertEqual(code, "LimitExceededException")

    def test_update_destination_merges_and_bumps_the_version(self):
        self.create("ops-update", "unused-bucket", Prefix="logs/")
        code, message = self.error(
            self.firehose.update_destination, DeliveryStreamName="ops-update", CurrentDeliveryStreamVersionId="7",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"CompressionFormat": "GZIP"},
        )
        self.assertEqual(code, "ConcurrentModificationException")
        self.assertIn("current version id: 1", message)
        self.firehose.update_destination(
            DeliveryStreamName="ops-update", CurrentDeliveryStreamVersionId="1",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"CompressionFormat": "GZIP",
                                         "BufferingHints": {"SizeInMBs": 2, "IntervalInSeconds": 60}},
        )
        description = self.firehose.describe_delivery_stream(DeliveryStreamName="ops-update")[
            "DeliveryStreamDescription"]
        self.assertEqual(description["VersionId"], "2")
        extended = description["Destinations"][0]["ExtendedS3DestinationDescription"]
        self.assertEqual(extended["CompressionFormat"], "GZIP")
        self.assertEqual(extended["Prefix"], "logs/")
        self.assertEqual(extended["BufferingHints"], {"SizeInMBs": 2, "IntervalInSeconds": 60})
        code, message = self.error(
            self.firehose.update_destination, DeliveryStreamName="ops-update", CurrentDeliveryStreamVersionId="2",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"Prefix": "a/!{timestamp:yyyy}/"},
        )
        self.assertEqual(code, "InvalidArgumentException")
        self.assertIn("ErrorOutputPrefix cannot be null or empty when Prefix contains expressions", message)
        version = self.firehose.describe_delivery_stream(DeliveryStreamName="ops-update")[
            "DeliveryStreamDescription"]["VersionId"]
        self.assertEqual(version, "2", "a refused update changes nothing")

    def test_encryption_start_and_stop(self):
        self.create("ops-sse", "unused-bucket")
        self.firehose.start_delivery_stream_encryption(
            DeliveryStreamName="ops-sse", DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"}
        )
        described = self.firehose.describe_delivery_stream(DeliveryStreamName="ops-sse")["DeliveryStreamDescription"]
        self.assertEqual(described["DeliveryStreamEncryptionConfiguration"],
                         {"KeyType": "AWS_OWNED_CMK", "Status": "ENABLED"})
        self.assertTrue(self.firehose.put_record(DeliveryStreamName="ops-sse", Record={"Data": b"x"})["Encrypted"])
        self.firehose.stop_delivery_stream_encryption(DeliveryStreamName="ops-sse")
        described = self.firehose.describe_delivery_stream(DeliveryStreamName="ops-sse")["DeliveryStreamDescription"]
        self.assertEqual(described["DeliveryStreamEncryptionConfiguration"], {"Status": "DISABLED"})
        code, _ = self.error(
            self.firehose.start_delivery_stream_encryption, DeliveryStreamName="ops-sse",
            DeliveryStreamEncryptionConfigurationInput={"KeyType": "CUSTOMER_MANAGED_CMK"},
        )
        self.assertEqual(code, "InvalidArgumentException")

    def test_errors_in_aws_shapes(self):
        code, message = self.error(self.firehose.describe_delivery_stream, DeliveryStreamName="absent")
        self.assertEqual((code, message), ("ResourceNotFoundException",
                                           "Firehose absent under account 000000000000 not found."))
        code, _ = self.error(self.firehose.put_record, DeliveryStreamName="absent", Record={"Data": b"x"})
        self.assertEqual(code, "ResourceNotFoundException")
        code, _ = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="bad name!",
                             ExtendedS3DestinationConfiguration=s3_destination("b-1"))
        self.assertEqual(code, "ValidationException")
        code, _ = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="x" * 65,
                             ExtendedS3DestinationConfiguration=s3_destination("b-1"))
        self.assertEqual(code, "ValidationException")
        code, message = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="no-destination")
        self.assertEqual((code, message), ("InvalidArgumentException",
                                           "Exactly one destination configuration is supported for a Firehose"))
        code, message = self.error(
            self.firehose.create_delivery_stream, DeliveryStreamName="redshift",
            RedshiftDestinationConfiguration={
                "RoleARN": ROLE, "ClusterJDBCURL": "jdbc:redshift://x", "CopyCommand": {"DataTableName": "t"},
                "S3Configuration": s3_destination("b-1"),
            },
        )
        self.assertEqual(code, "InvalidArgumentException")
        self.assertIn("ExtendedS3DestinationConfiguration", message)
        code, message = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="prefix-rule",
                                   ExtendedS3DestinationConfiguration=s3_destination(
                                       "b-1", Prefix="x/!{timestamp:yyyy}/"))
        self.assertEqual(code, "InvalidArgumentException")
        self.assertTrue(message.startswith("Ths supplied prefix(es) do not satisfy the following constraint"))
        code, _ = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="compression",
                             ExtendedS3DestinationConfiguration=s3_destination("b-1", CompressionFormat="LZ4"))
        self.assertEqual(code, "ValidationException")
        self.create("ops-errors", "unused-bucket")
        code, _ = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="ops-errors",
                             ExtendedS3DestinationConfiguration=s3_destination("b-1"))
        self.assertEqual(code, "ResourceInUseException")
        code, message = self.error(self.firehose.put_record, DeliveryStreamName="ops-errors",
                                   Record={"Data": b"x" * 1_024_001})
        self.assertEqual(code, "ValidationException")
        self.assertIn("'record.data'", message)
        self.firehose.put_record(DeliveryStreamName="ops-errors", Record={"Data": b"x" * 1_024_000})
        code, _ = self.error(self.firehose.put_record_batch, DeliveryStreamName="ops-errors",
                             Records=[{"Data": b"x"}] * 501)
        self.assertEqual(code, "ValidationException")
        code, message = self.error(self.firehose.put_record_batch, DeliveryStreamName="ops-errors",
                                   Records=[{"Data": b"x" * 1_000_000}] * 5)
        self.assertEqual((code, message), ("InvalidArgumentException", "Records size exceeds 4 MB limit"))
        code, _ = self.error(self.firehose.put_record_batch, DeliveryStreamName="ops-errors", Records=[])
        self.assertEqual(code, "ValidationException")

    def test_delete(self):
        self.create("ops-delete", "unused-bucket")
        self.firehose.delete_delivery_stream(DeliveryStreamName="ops-delete")
        code, _ = self.error(self.firehose.describe_delivery_stream, DeliveryStreamName="ops-delete")
        self.assertEqual(code, "ResourceNotFoundException")
        code, _ = self.error(self.firehose.delete_delivery_stream, DeliveryStreamName="ops-delete")
        self.assertEqual(code, "ResourceNotFoundException")

    def test_millrace_firehose_cli(self):
        from harness import ACCESS_KEY, SECRET_KEY
        env = dict(os.environ, MILLRACE_ACCESS_KEY_ID=ACCESS_KEY, MILLRACE_SECRET_ACCESS_KEY=SECRET_KEY)

        def millrace(*args, stdin=None):
            output = subprocess.run([os.environ["MILLRACE_BIN"], "firehose", *args, "--endpoint", SERVER.endpoint],
                                    env=env, input=stdin, capture_output=True, text=True, timeout=120)
            self.assertEqual(output.returncode, 0, output.stderr)
            return output.stdout

        bucket = self.bucket("cli-bucket")
        self.assertIn("deliverystream/cli-fh", millrace("create", "cli-fh", "--bucket", bucket, "--compression",
                                                        "GZIP", "--size-mib", "1", "--interval-secs", "1",
                                                        "--newline"))
        self.addCleanup(self.delete_quietly, "cli-fh")
        self.assertIn("cli-fh", millrace("list").split())
        described = json.loads(millrace("describe", "cli-fh"))["DeliveryStreamDescription"]
        self.assertEqual(described["Destinations"][0]["ExtendedS3DestinationDescription"]["CompressionFormat"],
                         "GZIP")
        self.assertEqual(millrace("put", "cli-fh", stdin="one\ntwo\n").strip(), "put 2 records into cli-fh")
        [key] = wait_for(lambda: self.objects(bucket), timeout=20)
        self.assertEqual(gzip.decompress(self.read(bucket, key)[0]), b"one\ntwo\n")
        self.assertEqual(millrace("delete", "cli-fh").strip(), "deleted cli-fh")
        self.assertNotIn("cli-fh", millrace("list").split())

    def test_aws_cli(self):
        env = SERVER.cli_env()
        aws = os.path.join(os.path.dirname(sys.executable), "aws")
        base = [aws, "--endpoint-url", SERVER.endpoint, "firehose"]
        subprocess.run(base + ["create-delivery-stream", "--delivery-stream-name", "cli-stream",
                               "--extended-s3-destination-configuration",
                               json.dumps(s3_destination("unused-bucket"))],
                       env=env, check=True, capture_output=True)
        self.addCleanup(self.delete_quietly, "cli-stream")
        out = subprocess.run(base + ["put-record", "--delivery-stream-name", "cli-stream",
                                     "--record", '{"Data":"aGVsbG8="}'],
                             env=env, check=True, capture_output=True, text=True)
        self.assertIn("RecordId", json.loads(out.stdout))
        out = subprocess.run(base + ["list-delivery-streams"], env=env, check=True, capture_output=True, text=True)
        self.assertIn("cli-stream", json.loads(out.stdout)["DeliveryStreamNames"])


class Delivery(Base):
    def test_buffering_by_interval_then_one_object_with_the_default_key(self):
        bucket = self.bucket("interval-bucket")
        self.create("by-interval", bucket, BufferingHints={"SizeInMBs": 5, "IntervalInSeconds": 3})
        started = time.time()
        self.firehose.put_record(DeliveryStreamName="by-interval", Record={"Data": b"first|"})
        self.firehose.put_record_batch(DeliveryStreamName="by-interval",
                                       Records=[{"Data": b"second|"}, {"Data": b"third"}])
        time.sleep(1.5)
        self.assertEqual(self.objects(bucket), [], "no object before the interval")
        [key] = wait_for(lambda: self.objects(bucket), timeout=20)
        self.assertGreaterEqual(time.time() - started, 2.5)
        self.assertRegex(key, r"^\d{4}/\d{2}/\d{2}/\d{2}/by-interval" + SUFFIX + "$")
        body, encoding = self.read(bucket, key)
        self.assertEqual(body, b"first|second|third", "records concatenated as they are")
        self.assertIsNone(encoding)
        time.sleep(4)
        self.assertEqual(len(self.objects(bucket)), 1, "every record was delivered once")

    def test_buffering_by_size(self):
        bucket = self.bucket("size-bucket")
        self.create("by-size", bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 900})
        record = os.urandom(100_000)
        self.firehose.put_record_batch(DeliveryStreamName="by-size", Records=[{"Data": record}] * 8)
        time.sleep(2)
        self.assertEqual(self.objects(bucket), [], "800 KB is under the 1 MiB hint")
        self.firehose.put_record_batch(DeliveryStreamName="by-size", Records=[{"Data": record}] * 4)
        [key] = wait_for(lambda: self.objects(bucket), timeout=20)
        body, _ = self.read(bucket, key)
        self.assertEqual(len(body), 11 * 100_000, "the object ends with the record that reached 1 MiB")
        time.sleep(2)
        self.assertEqual(len(self.objects(bucket)), 1, "the rest waits for the interval")

    def test_every_compression_read_back_with_the_standard_decoders(self):
        payload = b"".join(b'{"n":%d,"text":"firehose"}\n' % i for i in range(3000))
        cases = {
            "GZIP": (".gz", "gzip", lambda body: gzip.decompress(body)),
            "ZIP": (".zip", "zip", self.unzip),
            "Snappy": (".snappy", "snappy-java", self.snappy_java),
            "HADOOP_SNAPPY": (".snappy", "hadoop-snappy", self.hadoop_snappy),
        }
        for format, (extension, encoding, decode) in cases.items():
            with self.subTest(format=format):
                bucket = self.bucket(f"compression-{format.lower().replace('_', '-')}")
                name = f"compress-{format}"
                self.create(name, bucket, CompressionFormat=format,
                            BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1})
                lines = payload.splitlines(keepends=True)
                for start in range(0, len(lines), 500):
                    self.firehose.put_record_batch(DeliveryStreamName=name,
                                                   Records=[{"Data": line} for line in lines[start:start + 500]])
                [key] = wait_for(lambda: self.objects(bucket), timeout=20)
                self.assertTrue(key.endswith(extension), key)
                body, got_encoding = self.read(bucket, key)
                self.assertEqual(got_encoding, encoding)
                self.assertEqual(decode(body), payload)

    @staticmethod
    def unzip(body):
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            [entry] = archive.namelist()
            assert re.fullmatch(r"[0-9a-f-]{36}", entry), entry
            return archive.read(entry)

    @staticmethod
    def snappy_java(body):
        # snappy-java's stream: magic, version 1, compatible 1, then (u32 length, raw block).
        assert body[:16] == b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01", body[:16]
        out, at = b"", 16
        while at < len(body):
            length = int.from_bytes(body[at:at + 4], "big")
            out += snappy.uncompress(body[at + 4:at + 4 + length])
            at += 4 + length
        return out

    @staticmethod
    def hadoop_snappy(body):
        return snappy.HadoopStreamDecompressor().decompress(body)

    def test_custom_prefix_and_extension(self):
        bucket = self.bucket("prefix-bucket")
        self.create("custom-prefix", bucket,
                    Prefix="year=!{timestamp:yyyy}/day=!{timestamp:dd}/!{firehose:random-string}/",
                    ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                    FileExtension=".json", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1})
        self.firehose.put_record(DeliveryStreamName="custom-prefix", Record={"Data": b"{}"})
        [key] = wait_for(lambda: self.objects(bucket), timeout=20)
        self.assertRegex(key, r"^year=\d{4}/day=\d{2}/[0-9a-f]{11}/custom-prefix" + SUFFIX + r"\.json$")

    def test_custom_time_zone(self):
        bucket = self.bucket("zone-bucket")
        self.create("in-tokyo", bucket, CustomTimeZone="Asia/Tokyo",
                    BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1})
        self.firehose.put_record(DeliveryStreamName="in-tokyo", Record={"Data": b"x"})
        [key] = wait_for(lambda: self.objects(bucket), timeout=20)
        tokyo = time.gmtime(time.time() + 9 * 3600)
        self.assertTrue(key.startswith(time.strftime("%Y/%m/%d/%H/", tokyo)), key)
        described = self.firehose.describe_delivery_stream(DeliveryStreamName="in-tokyo")[
            "DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
        self.assertEqual(described["CustomTimeZone"], "Asia/Tokyo")
        code, _ = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="nowhere-zone",
                             ExtendedS3DestinationConfiguration=s3_destination("b-1", CustomTimeZone="Mars/Olympus"))
        self.assertEqual(code, "InvalidArgumentException")

    def test_append_delimiter_processor(self):
        bucket = self.bucket("delimiter-bucket")
        self.create("delimited", bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
                    ProcessingConfiguration={"Enabled": True, "Processors": [
                        {"Type": "AppendDelimiterToRecord",
                         "Parameters": [{"ParameterName": "Delimiter", "ParameterValue": "\\n"}]}]})
        self.firehose.put_record_batch(DeliveryStreamName="delimited", Records=[{"Data": b"a"}, {"Data": b"b"}])
        [key] = wait_for(lambda: self.objects(bucket), timeout=20)
        self.assertEqual(self.read(bucket, key)[0], b"a\nb\n")

    def test_missing_bucket_is_retried_never_dropped(self):
        self.create("late-bucket", "created-later", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1})
        self.firehose.put_record(DeliveryStreamName="late-bucket", Record={"Data": b"kept"})
        time.sleep(3)
        self.bucket("created-later")
        [key] = wait_for(lambda: self.objects("created-later"), timeout=40)
        self.assertEqual(self.read("created-later", key)[0], b"kept")

    def test_kinesis_stream_as_source(self):
        kinesis = SERVER.client()
        kinesis.create_stream(StreamName="fh-source", ShardCount=2)
        self.addCleanup(lambda: kinesis.delete_stream(StreamName="fh-source"))
        bucket = self.bucket("kinesis-source-bucket")
        self.firehose.create_delivery_stream(
            DeliveryStreamName="from-kinesis", DeliveryStreamType="KinesisStreamAsSource",
            KinesisStreamSourceConfiguration={
                "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/fh-source", "RoleARN": ROLE},
            ExtendedS3DestinationConfiguration=s3_destination(
                bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1}),
        )
        self.addCleanup(self.delete_quietly, "from-kinesis")
        description = self.firehose.describe_delivery_stream(DeliveryStreamName="from-kinesis")[
            "DeliveryStreamDescription"]
        self.assertEqual(description["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"],
                         "arn:aws:kinesis:us-east-1:000000000000:stream/fh-source")
        code, message = self.error(self.firehose.put_record, DeliveryStreamName="from-kinesis",
                                   Record={"Data": b"x"})
        self.assertEqual((code, message), ("InvalidArgumentException",
                                           "This operation is not permitted on KinesisStreamAsSource delivery stream type."))
        kinesis.put_records(StreamName="fh-source",
                            Records=[{"Data": b"k%02d;" % i, "PartitionKey": f"p{i}"} for i in range(20)])
        keys = wait_for(lambda: self.objects(bucket), timeout=20)
        delivered = b"".join(self.read(bucket, key)[0] for key in keys)
        self.assertEqual(sorted(delivered.split(b";")[:-1]), [b"k%02d" % i for i in range(20)])
        code, _ = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="from-nowhere",
                             DeliveryStreamType="KinesisStreamAsSource",
                             KinesisStreamSourceConfiguration={
                                 "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/absent",
                                 "RoleARN": ROLE},
                             ExtendedS3DestinationConfiguration=s3_destination(bucket))
        self.assertEqual(code, "InvalidArgumentException")


def lambda_processor(function, **parameters):
    values = {"LambdaArn": f"arn:aws:lambda:us-east-1:123456789012:function:{function}",
              "BufferSizeInMBs": "1", "BufferIntervalInSeconds": "1"}
    values.update(parameters)
    return {"Enabled": True, "Processors": [{
        "Type": "Lambda",
        "Parameters": [{"ParameterName": key, "ParameterValue": value} for key, value in values.items()]}]}


class Transformation(Base):
    def test_records_transformed_dropped_and_failed_as_the_function_says(self):
        bucket = self.bucket("lambda-bucket")
        processing = lambda_processor("upper")
        processing["Processors"].append({"Type": "AppendDelimiterToRecord", "Parameters": []})
        self.create("transformed", bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
                    ErrorOutputPrefix="errors/!{firehose:error-output-type}/", ProcessingConfiguration=processing)
        before = int(time.time() * 1000)
        self.firehose.put_record_batch(DeliveryStreamName="transformed", Records=[
            {"Data": b"a"}, {"Data": b"drop me"}, {"Data": b"fail me"}, {"Data": b"b"}])
        keys = wait_for(lambda: len(self.objects(bucket)) >= 2 and self.objects(bucket), timeout=30)
        [failed_key] = [key for key in keys if key.startswith("errors/")]
        [object_key] = [key for key in keys if not key.startswith("errors/")]
        self.assertEqual(self.read(bucket, object_key)[0], b"A\nB\n")
        self.assertRegex(failed_key, r"^errors/processing-failed/transformed" + SUFFIX + "$")
        [line] = self.read(bucket, failed_key)[0].splitlines()
        record = json.loads(line)
        self.assertEqual(list(record), ["attemptsMade", "arrivalTimestamp", "errorCode", "errorMessage",
                                        "attemptEndingTimestamp", "rawData", "lambdaArn"])
        self.assertEqual(base64.b64decode(record["rawData"]), b"fail me", "the original data")
        self.assertEqual(record["lambdaArn"], "arn:aws:lambda:us-east-1:123456789012:function:upper")
        self.assertEqual(record["attemptsMade"], 1)
        [(function, headers, event)] = [e for e in LAMBDA.events if e[2].get("deliveryStreamArn", "").endswith("/transformed")]
        self.assertEqual(function, "upper")
        self.assertEqual(headers["X-Amz-Invocation-Type"], "RequestResponse")
        self.assertEqual(list(event), ["invocationId", "deliveryStreamArn", "region", "records"])
        self.assertEqual(event["region"], "us-east-1")
        self.assertEqual(len({r["recordId"] for r in event["records"]}), 4)
        for sent in event["records"]:
            self.assertGreaterEqual(sent["approximateArrivalTimestamp"], before)
        self.assertEqual([base64.b64decode(r["data"]) for r in event["records"]],
                         [b"a", b"drop me", b"fail me", b"b"])

    def test_source_records_backed_up_before_the_transformation(self):
        bucket = self.bucket("lambda-backed-up")
        self.create("backed-up", bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1}, Prefix="out/",
                    ProcessingConfiguration=lambda_processor("upper"), S3BackupMode="Enabled",
                    S3BackupConfiguration=s3_destination(bucket, Prefix="source/"))
        described = self.firehose.describe_delivery_stream(DeliveryStreamName="backed-up")[
            "DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
        self.assertEqual(described["S3BackupDescription"]["Prefix"], "source/")
        self.firehose.put_record_batch(DeliveryStreamName="backed-up", Records=[{"Data": b"x;"}, {"Data": b"y;"}])
        keys = wait_for(lambda: len(self.objects(bucket)) >= 2 and self.objects(bucket), timeout=30)
        [source] = [k for k in keys if k.startswith("source/")]
        [out] = [k for k in keys if k.startswith("out/")]
        self.assertEqual(self.read(bucket, source)[0], b"x;y;")
        self.assertEqual(self.read(bucket, out)[0], b"X;Y;")
        code, message = self.error(
            self.firehose.update_destination, DeliveryStreamName="backed-up", CurrentDeliveryStreamVersionId="1",
            DestinationId="destinationId-000000000001", ExtendedS3DestinationUpdate={"S3BackupMode": "Disabled"})
        self.assertEqual((code, message), ("InvalidArgumentException", "S3 backup cannot be disabled once it is enabled"))

    def test_function_errors_are_retried_then_processing_failed(self):
        bucket = self.bucket("lambda-broken")
        self.create("broken-fn", bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
                    ProcessingConfiguration=lambda_processor("broken", NumberOfRetries="1"))
        self.firehose.put_record(DeliveryStreamName="broken-fn", Record={"Data": b"payload"})
        [key] = wait_for(lambda: self.objects(bucket), timeout=30)
        self.assertRegex(key, r"^processing-failed/\d{4}/\d{2}/\d{2}/\d{2}/broken-fn" + SUFFIX + "$",
                         "no ErrorOutputPrefix: <Prefix><error-output-type>/YYYY/MM/DD/HH/")
        record = json.loads(self.read(bucket, key)[0])
        self.assertEqual((record["attemptsMade"], record["errorCode"]), (2, "Lambda.FunctionError"))
        self.assertTrue(record["errorMessage"].startswith(
            "The Lambda function was successfully invoked but it returned an error result."))

    def test_a_missing_record_id_fails_the_batch(self):
        bucket = self.bucket("lambda-forgetful")
        self.create("forgetful-fn", bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
                    ProcessingConfiguration=lambda_processor("forgetful"))
        self.firehose.put_record_batch(DeliveryStreamName="forgetful-fn",
                                       Records=[{"Data": b"one"}, {"Data": b"two"}])
        [key] = wait_for(lambda: self.objects(bucket), timeout=30)
        lines = [json.loads(line) for line in self.read(bucket, key)[0].splitlines()]
        self.assertEqual([base64.b64decode(r["rawData"]) for r in lines], [b"one", b"two"])
        self.assertEqual({(r["errorCode"], r["lambdaArn"]) for r in lines}, {("Lambda.MissingRecordId", "")})

    def test_a_bad_lambda_arn_is_refused(self):
        code, message = self.error(
            self.firehose.create_delivery_stream, DeliveryStreamName="bad-lambda",
            ExtendedS3DestinationConfiguration=s3_destination("b-1", ProcessingConfiguration={
                "Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
                    {"ParameterName": "LambdaArn", "ParameterValue": "not-an-arn"}]}]}))
        self.assertEqual(code, "InvalidArgumentException")
        self.assertIn("not a Lambda function ARN", message)


PARTITIONED = {"bucket": "partitioned-bucket", "started": None}
PARTITION_QUERY = '{customer: .customer, year: .ts | strftime("%Y")}'


def start_dynamic_partitioning():
    """Dynamic partitioning needs IntervalInSeconds >= 60: its records are put when the module
    starts, and ZDynamicPartitioning (run last) checks the objects."""
    firehose = SERVER.client(service="firehose")
    MOTO.s3().create_bucket(Bucket=PARTITIONED["bucket"])
    firehose.create_delivery_stream(
        DeliveryStreamName="partitioned",
        ExtendedS3DestinationConfiguration=s3_destination(
            PARTITIONED["bucket"],
            Prefix="customer=!{partitionKeyFromQuery:customer}/year=!{partitionKeyFromQuery:year}/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
            BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60},
            DynamicPartitioningConfiguration={"Enabled": True},
            ProcessingConfiguration={"Enabled": True, "Processors": [
                {"Type": "MetadataExtraction", "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": PARTITION_QUERY},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
                {"Type": "AppendDelimiterToRecord", "Parameters": []}]}))
    PARTITIONED["started"] = time.time()
    records = [json.dumps({"customer": customer, "ts": ts, "n": n}).encode()
               for n, (customer, ts) in enumerate([("acme", 1700000000), ("initech", 1700000000),
                                                   ("acme", 1710000000), ("acme", 1700000001)])]
    firehose.put_record_batch(DeliveryStreamName="partitioned",
                              Records=[{"Data": r} for r in records] + [{"Data": b"not json"}])
    PARTITIONED["records"] = records
    firehose.create_delivery_stream(
        DeliveryStreamName="partitioned-lambda",
        ExtendedS3DestinationConfiguration=s3_destination(
            PARTITIONED["bucket"], Prefix="lambda/k=!{partitionKeyFromLambda:k}/",
            ErrorOutputPrefix="lambda-errors/!{firehose:error-output-type}/",
            BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60},
            DynamicPartitioningConfiguration={"Enabled": True},
            ProcessingConfiguration=lambda_processor("keyed")))
    firehose.put_record_batch(DeliveryStreamName="partitioned-lambda",
                              Records=[{"Data": d} for d in (b"a1;", b"b1;", b"a2;")])
    # 501 partitions: the last record is over the limit of 500 active partitions.
    MOTO.s3().create_bucket(Bucket="many-partitions")
    extraction = {"Enabled": True, "Processors": [{"Type": "MetadataExtraction", "Parameters": [
        {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{k: .k}"},
        {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]}
    firehose.create_delivery_stream(
        DeliveryStreamName="many-partitions",
        ExtendedS3DestinationConfiguration=s3_destination(
            "many-partitions", Prefix="k=!{partitionKeyFromQuery:k}/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
            BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 60},
            DynamicPartitioningConfiguration={"Enabled": True}, ProcessingConfiguration=extraction))
    many = [json.dumps({"k": f"p{i:03d}"}).encode() for i in range(501)]
    firehose.put_record_batch(DeliveryStreamName="many-partitions", Records=[{"Data": d} for d in many[:500]])
    firehose.put_record(DeliveryStreamName="many-partitions", Record={"Data": many[500]})


class ZDynamicPartitioning(Base):
    """Runs last: the objects of the stream created by start_dynamic_partitioning."""

    def test_one_object_per_partition_after_the_interval(self):
        bucket = PARTITIONED["bucket"]
        [error_key] = wait_for(lambda: [k for k in self.objects(bucket) if k.startswith("errors/")], timeout=30)
        self.assertRegex(error_key, r"^errors/processing-failed/partitioned" + SUFFIX + "$")
        error = json.loads(self.read(bucket, error_key)[0])
        self.assertEqual(error["errorCode"], "DynamicPartitioning.MetadataExtractionFailed")
        self.assertEqual(base64.b64decode(error["rawData"]), b"not json")
        keys = wait_for(lambda: len(self.objects(bucket)) >= 6 and self.objects(bucket), timeout=120, step=1)
        self.assertGreaterEqual(time.time() - PARTITIONED["started"], 59, "not before the 60 s interval")
        objects = {key.split("/partitioned-")[0]: self.read(bucket, key)[0] for key in keys
                   if not key.startswith(("errors/", "lambda"))}
        by_lambda = {key.split("/partitioned-lambda-")[0]: self.read(bucket, key)[0] for key in keys
                     if key.startswith("lambda/")}
        self.assertEqual(by_lambda, {"lambda/k=a": b"a1;a2;", "lambda/k=b": b"b1;"},
                         "partition keys from the Lambda function's metadata")
        r = PARTITIONED["records"]
        self.assertEqual(objects, {
            "customer=acme/year=2023": r[0] + b"\n" + r[3] + b"\n",
            "customer=acme/year=2024": r[2] + b"\n",
            "customer=initech/year=2023": r[1] + b"\n",
        })

    def test_active_partitions_are_limited_to_500(self):
        [key] = wait_for(lambda: [k for k in self.objects("many-partitions") if k.startswith("errors/")], timeout=30)
        self.assertRegex(key, r"^errors/activePartitionExceeded/many-partitions" + SUFFIX + "$")
        record = json.loads(self.read("many-partitions", key)[0])
        self.assertEqual(base64.b64decode(record["rawData"]), b'{"k": "p500"}')
        self.assertEqual(record["errorCode"], "DynamicPartitioning.ActivePartitionsLimitExceeded")

        def delivered():
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket="many-partitions", Prefix="k=")
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

        keys = wait_for(lambda: len(delivered()) >= 500 and delivered(), timeout=120, step=2)
        self.assertEqual(sorted({key.split("/")[0] for key in keys}), [f"k=p{i:03d}" for i in range(500)])

    def test_create_time_rules(self):
        def refused(**extra):
            config = s3_destination("b-1", **extra)
            return self.error(self.firehose.create_delivery_stream, DeliveryStreamName="dp-rules",
                              ExtendedS3DestinationConfiguration=config)

        extraction = {"Enabled": True, "Processors": [{"Type": "MetadataExtraction", "Parameters": [
            {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{a: .a}"},
            {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]}
        good = dict(Prefix="a=!{partitionKeyFromQuery:a}/", ErrorOutputPrefix="e/!{firehose:error-output-type}/",
                    DynamicPartitioningConfiguration={"Enabled": True}, ProcessingConfiguration=extraction)
        cases = [
            (dict(good, BufferingHints={"SizeInMBs": 5, "IntervalInSeconds": 60}),
             "BufferingHints.SizeInMBs must be at least 64 when Dynamic Partitioning is enabled."),
            (dict(good, BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 10}),
             "BufferingHints.IntervalInSeconds must be at least 60 seconds when Dynamic Partitioning is enabled."),
            (dict(good, Prefix="static/"),
             "S3 Prefix should contain Dynamic Partitioning namespaces when Dynamic Partitioning is enabled"),
            (dict(good, ProcessingConfiguration={"Enabled": False, "Processors": []}),
             "Processing Configuration is not enabled when DataPartitioning is enabled"),
            (dict(good, Prefix="b=!{partitionKeyFromQuery:b}/"),
             "partitionKeyFromQuery:b in the S3 Prefix is not a key of the MetadataExtractionQuery"),
            (dict(good, Prefix="l=!{partitionKeyFromLambda:l}/"),
             "Lambda should be present when S3 Prefix contains keys from partitionKeyFromLambda namespace"),
            (dict(good, DynamicPartitioningConfiguration={"Enabled": False}),
             "Dynamic Partitioning namespaces (partitionKeyFromQuery, partitionKeyFromLambda) can only be used "
             "in the S3 Prefix when Dynamic Partitioning is enabled"),
        ]
        for extra, message in cases:
            with self.subTest(message=message):
                self.assertEqual(refused(**extra), ("InvalidArgumentException", message))
        bad_query = {"Enabled": True, "Processors": [{"Type": "MetadataExtraction", "Parameters": [
            {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{a: .a"}]}]}
        code, message = refused(**dict(good, ProcessingConfiguration=bad_query))
        self.assertEqual(code, "InvalidArgumentException")
        self.assertIn("does not parse", message)
        description = self.firehose.describe_delivery_stream(DeliveryStreamName="partitioned")[
            "DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
        self.assertEqual(description["DynamicPartitioningConfiguration"], {"Enabled": True})
        code, message = self.error(
            self.firehose.update_destination, DeliveryStreamName="partitioned", CurrentDeliveryStreamVersionId="1",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"DynamicPartitioningConfiguration": {"Enabled": False}})
        self.assertEqual((code, message), ("InvalidArgumentException",
                                           "Dynamic partitioning cannot be disabled once it is enabled"))


class Receiver:
    """A local HTTP endpoint that records every request Firehose sends and answers as told:
    `flaky` answers 500 to the first attempt of each request id and 200 to the next;
    `down` always answers 500 with an error message."""

    def __init__(self, mode):
        self.mode, self.requests, self.seen = mode, [], set()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
                document = json.loads(raw)
                receiver.requests.append((self.path, dict(self.headers), document))
                request_id = document["requestId"]
                first = request_id not in receiver.seen
                receiver.seen.add(request_id)
                if receiver.mode == "down" or first:
                    status, answer = 500, {"requestId": request_id, "timestamp": int(time.time() * 1000),
                                           "errorMessage": "Unavailable"}
                else:
                    status, answer = 200, {"requestId": request_id, "timestamp": int(time.time() * 1000)}
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ingest?source=firehose"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class Bulk:
    """A local OpenSearch bulk API: refuses documents containing "busy" once with 429, and
    documents containing "bad" always with a mapper_parsing_exception; indexes the rest."""

    def __init__(self):
        self.requests, self.indexed, self.busy_seen = [], {}, set()
        bulk = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                lines = body.decode().split("\n")
                assert lines[-1] == "", "NDJSON ends with a newline"
                bulk.requests.append((self.path, dict(self.headers), lines[:-1]))
                items = []
                for action, doc in zip(lines[0:-1:2], lines[1:-1:2]):
                    meta = json.loads(action)["index"]
                    if "bad" in doc:
                        items.append({"index": {"status": 400, "error": {"type": "mapper_parsing_exception",
                                                                        "reason": "failed to parse"}}})
                    elif "busy" in doc and meta["_id"] not in bulk.busy_seen:
                        bulk.busy_seen.add(meta["_id"])
                        items.append({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}})
                    else:
                        bulk.indexed[(meta["_index"], meta["_id"])] = json.loads(doc)
                        items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 201}})
                payload = json.dumps({"took": 1, "errors": any(i["index"]["status"] >= 300 for i in items),
                                      "items": items}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class Hec:
    """A local Splunk HTTP Event Collector with indexer acknowledgment: each POST to
    /services/collector/raw or /event gets an ackId, which /services/collector/ack reports as
    indexed on the second poll. Only the token "hec-token" is accepted."""

    def __init__(self):
        self.events, self.requests, self.polls = [], [], {}
        hec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, document):
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hec.requests.append((self.path, dict(self.headers)))
                if self.headers.get("Authorization") != "Splunk hec-token":
                    return self.answer(403, {"text": "Invalid token", "code": 4})
                if self.path == "/services/collector/ack":
                    answers = {}
                    for ack in json.loads(body)["acks"]:
                        hec.polls[ack] = hec.polls.get(ack, 0) + 1
                        answers[str(ack)] = hec.polls[ack] >= 2
                    return self.answer(200, {"acks": answers})
                hec.events.append((self.path, body))
                return self.answer(200, {"text": "Success", "code": 0, "ackId": len(hec.events)})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class Splunk(Base):
    def splunk_stream(self, name, hec, backup, token="hec-token", **extra):
        config = {"HECEndpoint": hec.url, "HECEndpointType": "Event", "HECToken": token,
                  "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
                  "S3Configuration": s3_destination(backup, ErrorOutputPrefix="failed/!{firehose:error-output-type}/")}
        config.update(extra)
        self.firehose.create_delivery_stream(DeliveryStreamName=name, SplunkDestinationConfiguration=config)
        self.addCleanup(self.delete_quietly, name)

    def test_events_sent_and_acknowledged(self):
        hec = Hec()
        self.addCleanup(hec.close)
        backup = self.bucket("splunk-backup")
        self.splunk_stream("to-splunk", hec, backup)
        described = self.firehose.describe_delivery_stream(DeliveryStreamName="to-splunk")[
            "DeliveryStreamDescription"]["Destinations"][0]["SplunkDestinationDescription"]
        self.assertEqual((described["HECEndpointType"], described["HECAcknowledgmentTimeoutInSeconds"],
                          described["S3BackupMode"]), ("Event", 180, "FailedEventsOnly"))
        self.assertEqual(described["RetryOptions"], {"DurationInSeconds": 3600})
        events = [b'{"event":"one"}', b'{"event":"two"}']
        self.firehose.put_record_batch(DeliveryStreamName="to-splunk", Records=[{"Data": e} for e in events])
        self.assertTrue(wait_for(lambda: any(path == "/services/collector/ack" and hec.polls.get(1, 0) >= 2
                                             for path, _ in hec.requests), timeout=20))
        [(path, body)] = hec.events
        self.assertEqual((path, body), ("/services/collector/event", b"".join(events)))
        channels = {headers["X-Splunk-Request-Channel"] for _, headers in hec.requests}
        self.assertEqual(len(channels), 1, "send and acknowledgment share one channel")
        time.sleep(2)
        self.assertEqual(len(hec.events), 1, "acknowledged, so not sent again")
        self.assertEqual(self.objects(backup), [])

    def test_a_refused_token_ends_in_splunk_failed(self):
        hec = Hec()
        self.addCleanup(hec.close)
        backup = self.bucket("splunk-failed")
        self.splunk_stream("bad-token", hec, backup, token="wrong", RetryOptions={"DurationInSeconds": 2},
                           HECEndpointType="Raw")
        self.firehose.put_record(DeliveryStreamName="bad-token", Record={"Data": b"raw line"})
        [key] = wait_for(lambda: self.objects(backup), timeout=40)
        self.assertRegex(key, r"^failed/splunk-failed/bad-token" + SUFFIX + "$")
        record = json.loads(self.read(backup, key)[0])
        self.assertEqual(record["errorCode"], "Splunk.InvalidToken")
        self.assertEqual(list(record)[-3:], ["subsequenceNumber", "dataId", "EventId"])
        self.assertEqual(base64.b64decode(record["rawData"]), b"raw line")
        self.assertTrue(all(path == "/services/collector/raw" for path, _ in hec.requests))


class OpenSearch(Base):
    def test_bulk_indexing_retries_rejected_documents_and_backs_up_failed_ones(self):
        bulk = Bulk()
        self.addCleanup(bulk.close)
        backup = self.bucket("opensearch-backup")
        self.firehose.create_delivery_stream(
            DeliveryStreamName="to-opensearch",
            AmazonopensearchserviceDestinationConfiguration={
                "RoleARN": ROLE, "ClusterEndpoint": bulk.url, "IndexName": "events",
                "IndexRotationPeriod": "OneDay", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
                "RetryOptions": {"DurationInSeconds": 3},
                "S3Configuration": s3_destination(backup, ErrorOutputPrefix="failed/!{firehose:error-output-type}/"),
            })
        self.addCleanup(self.delete_quietly, "to-opensearch")
        [destination] = self.firehose.describe_delivery_stream(DeliveryStreamName="to-opensearch")[
            "DeliveryStreamDescription"]["Destinations"]
        described = destination["AmazonopensearchserviceDestinationDescription"]
        self.assertEqual((described["IndexName"], described["S3BackupMode"]), ("events", "FailedDocumentsOnly"))
        self.assertEqual(described["DocumentIdOptions"], {"DefaultDocumentIdFormat": "FIREHOSE_DEFAULT"})
        docs = [b'{"n":1}', b'{"n":2,"s":"busy"}', b'{"n":3,"s":"bad"}']
        self.firehose.put_record_batch(DeliveryStreamName="to-opensearch", Records=[{"Data": d} for d in docs])
        [key] = wait_for(lambda: self.objects(backup), timeout=40)
        index = time.strftime("events-%Y-%m-%d", time.gmtime())
        self.assertEqual(sorted(doc["n"] for doc in bulk.indexed.values()), [1, 2], "the 429 was retried")
        self.assertEqual({name for name, _ in bulk.indexed}, {index})
        path, headers, lines = bulk.requests[0]
        self.assertEqual((path, headers["Content-Type"]), ("/_bulk", "application/x-ndjson"))
        self.assertEqual(len(lines), 6)
        ids = [json.loads(line)["index"]["_id"] for line in lines[0::2]]
        self.assertEqual(len(set(ids)), 3, "one id per document")
        retried = [json.loads(line)["index"]["_id"] for line in bulk.requests[1][2][0::2]]
        self.assertEqual(set(retried), set(ids[1:]), "a retry sends only what was refused, with the same ids")
        self.assertRegex(key, r"^failed/AmazonOpenSearchService-failed/to-opensearch" + SUFFIX + "$")
        [record] = [json.loads(line) for line in self.read(backup, key)[0].splitlines()]
        self.assertEqual(record["errorCode"], "OpenSearch.mapper_parsing_exception")
        self.assertEqual(base64.b64decode(record["rawData"]), docs[2])
        self.assertEqual((record["esIndexName"], record["esDocumentId"]), (index, ids[2]))

    def test_domain_arns_cannot_be_reached(self):
        code, message = self.error(
            self.firehose.create_delivery_stream, DeliveryStreamName="domain-arn",
            ElasticsearchDestinationConfiguration={
                "RoleARN": ROLE, "DomainARN": "arn:aws:es:us-east-1:123456789012:domain/logs", "IndexName": "logs",
                "S3Configuration": s3_destination("b-1")})
        self.assertEqual(code, "InvalidArgumentException")
        self.assertIn("ClusterEndpoint", message)


class HttpEndpoint(Base):
    def http_stream(self, name, receiver, backup_bucket, **extra):
        config = {
            "EndpointConfiguration": {"Url": receiver.url, "Name": "receiver", "AccessKey": "endpoint-secret"},
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
            "RequestConfiguration": {"ContentEncoding": "GZIP", "CommonAttributes": [
                {"AttributeName": "team", "AttributeValue": "lake"}]},
            "RetryOptions": {"DurationInSeconds": 60},
            "S3Configuration": s3_destination(backup_bucket, ErrorOutputPrefix="failed/!{firehose:error-output-type}/"),
        }
        config.update(extra)
        self.firehose.create_delivery_stream(DeliveryStreamName=name, HttpEndpointDestinationConfiguration=config)
        self.addCleanup(self.delete_quietly, name)

    def test_every_header_500_then_200_nothing_lost(self):
        receiver = Receiver("flaky")
        self.addCleanup(receiver.close)
        self.http_stream("to-http", receiver, self.bucket("http-backup"))
        [destination] = self.firehose.describe_delivery_stream(DeliveryStreamName="to-http")[
            "DeliveryStreamDescription"]["Destinations"]
        described = destination["HttpEndpointDestinationDescription"]
        self.assertEqual(described["EndpointConfiguration"], {"Url": receiver.url, "Name": "receiver"},
                         "the access key is never described")
        self.assertEqual(described["S3BackupMode"], "FailedDataOnly")
        self.assertEqual(described["S3DestinationDescription"]["BucketARN"], "arn:aws:s3:::http-backup")
        sent = [b"event-%d" % i for i in range(30)]
        before = int(time.time() * 1000)
        self.firehose.put_record_batch(DeliveryStreamName="to-http", Records=[{"Data": d} for d in sent])
        self.assertTrue(wait_for(lambda: len(receiver.requests) >= 2, timeout=30))
        (path, first_headers, first), (_, headers, second) = receiver.requests[:2]
        self.assertEqual(path, "/ingest?source=firehose")
        self.assertEqual(headers["X-Amz-Firehose-Protocol-Version"], "1.0")
        self.assertEqual(headers["X-Amz-Firehose-Access-Key"], "endpoint-secret")
        self.assertEqual(headers["X-Amz-Firehose-Source-Arn"],
                         "arn:aws:firehose:us-east-1:000000000000:deliverystream/to-http")
        self.assertEqual(json.loads(headers["X-Amz-Firehose-Common-Attributes"]),
                         {"commonAttributes": {"team": "lake"}})
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["Content-Encoding"], "gzip")
        self.assertEqual(first_headers["X-Amz-Firehose-Request-Id"], headers["X-Amz-Firehose-Request-Id"],
                         "the request id is stable across retries")
        self.assertEqual(second["requestId"], headers["X-Amz-Firehose-Request-Id"])
        self.assertGreaterEqual(second["timestamp"], before, "timestamps are milliseconds")
        self.assertLess(second["timestamp"], before + 120_000)
        self.assertEqual([base64.b64decode(r["data"]) for r in second["records"]], sent)
        time.sleep(2)
        self.assertEqual(len(receiver.requests), 2, "delivered once the endpoint answered 200")
        self.assertEqual(self.objects("http-backup"), [], "nothing failed, so nothing is backed up")

    def test_retries_run_out_then_error_records_in_the_backup(self):
        receiver = Receiver("down")
        self.addCleanup(receiver.close)
        bucket = self.bucket("http-failed")
        self.http_stream("to-down", receiver, bucket, RetryOptions={"DurationInSeconds": 2})
        self.firehose.put_record(DeliveryStreamName="to-down", Record={"Data": b"sample raw data"})
        [key] = wait_for(lambda: self.objects(bucket), timeout=40)
        self.assertRegex(key, r"^failed/http-endpoint-failed/to-down" + SUFFIX + "$")
        [line] = self.read(bucket, key)[0].splitlines()
        record = json.loads(line)
        self.assertEqual(list(record), ["attemptsMade", "arrivalTimestamp", "errorCode", "errorMessage",
                                        "attemptEndingTimestamp", "rawData", "subsequenceNumber", "dataId"])
        self.assertGreaterEqual(record["attemptsMade"], 2)
        self.assertEqual(record["errorCode"], "HttpEndpoint.DestinationException")
        self.assertEqual(record["errorMessage"],
                         "Received the following response from the endpoint destination. Unavailable")
        self.assertEqual(base64.b64decode(record["rawData"]), b"sample raw data")
        self.assertGreater(record["attemptEndingTimestamp"], record["arrivalTimestamp"])

    def test_http_endpoint_needs_its_s3_configuration(self):
        code, message = self.error(
            self.firehose.create_delivery_stream, DeliveryStreamName="http-no-backup",
            HttpEndpointDestinationConfiguration={"EndpointConfiguration": {"Url": "http://127.0.0.1:9/"}})
        self.assertEqual(code, "ValidationException")
        self.assertIn("s3Configuration", message)


def kpl_aggregate(partition_key, records):
    """The Kinesis Producer Library's aggregated record: magic, protobuf, MD5."""
    import hashlib

    def varint(value):
        out = b""
        while value >= 0x80:
            out += bytes([(value & 0x7F) | 0x80])
            value >>= 7
        return out + bytes([value])

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    message = field(1, partition_key.encode())
    for data in records:
        message += field(3, varint(1 << 3) + varint(0) + field(3, data))
    return b"\xf3\x89\x9a\xc2" + message + hashlib.md5(message).digest()


class Deaggregation(Base):
    def test_kpl_aggregates_from_a_kinesis_source_and_json_sub_records(self):
        kinesis = SERVER.client()
        kinesis.create_stream(StreamName="kpl-source", ShardCount=1)
        self.addCleanup(lambda: kinesis.delete_stream(StreamName="kpl-source"))
        bucket = self.bucket("kpl-bucket")
        self.firehose.create_delivery_stream(
            DeliveryStreamName="kpl", DeliveryStreamType="KinesisStreamAsSource",
            KinesisStreamSourceConfiguration={
                "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/kpl-source", "RoleARN": ROLE},
            ExtendedS3DestinationConfiguration=s3_destination(
                bucket, BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
                ProcessingConfiguration={"Enabled": True, "Processors": [
                    {"Type": "RecordDeAggregation",
                     "Parameters": [{"ParameterName": "SubRecordType", "ParameterValue": "JSON"}]},
                    {"Type": "AppendDelimiterToRecord", "Parameters": []}]}))
        self.addCleanup(self.delete_quietly, "kpl")
        aggregate = kpl_aggregate("pk", [b'{"n":1}', b'{"n":2}{"n":3}', b'{"n":4}'])
        kinesis.put_record(StreamName="kpl-source", PartitionKey="pk", Data=aggregate)
        kinesis.put_record(StreamName="kpl-source", PartitionKey="pk", Data=b'{"n":5}')
        keys = wait_for(lambda: self.objects(bucket), timeout=20)
        delivered = b"".join(self.read(bucket, key)[0] for key in keys)
        self.assertEqual(delivered, b"".join(b'{"n":%d}\n' % n for n in range(1, 6)))


class FormatConversion(Base):
    """JSON to Parquet with the schema of a Glue table declared through the Glue API."""

    def test_glue_table_schema_and_parquet_read_back_with_pyarrow(self):
        import pyarrow.parquet as pq
        glue = SERVER.client(service="glue")
        glue.create_database(DatabaseInput={"Name": "Lake", "Description": "events"})
        self.addCleanup(lambda: glue.delete_database(Name="lake"))
        self.assertEqual(glue.get_database(Name="lake")["Database"]["Name"], "lake", "names are lower-cased")
        columns = [{"Name": "user", "Type": "string"}, {"Name": "n", "Type": "int"},
                   {"Name": "amount", "Type": "decimal(10,2)"}, {"Name": "at", "Type": "timestamp"},
                   {"Name": "ok", "Type": "boolean"}]
        table_input = {"Name": "events", "TableType": "EXTERNAL_TABLE",
                       "StorageDescriptor": {"Columns": columns, "Location": "s3://parquet-bucket/"},
                       "PartitionKeys": [{"Name": "day", "Type": "string"}]}
        glue.create_table(DatabaseName="lake", TableInput=table_input)
        code = self.error(glue.create_table, DatabaseName="lake", TableInput=table_input)[0]
        self.assertEqual(code, "AlreadyExistsException")
        table = glue.get_table(DatabaseName="lake", Name="events")["Table"]
        self.assertEqual([c["Name"] for c in table["StorageDescriptor"]["Columns"]], ["user", "n", "amount", "at", "ok"])
        self.assertEqual([t["Name"] for t in glue.get_tables(DatabaseName="lake", Expression="ev*")["TableList"]],
                         ["events"])
        self.assertEqual(self.error(glue.get_table, DatabaseName="lake", Name="absent")[0], "EntityNotFoundException")
        bucket = self.bucket("parquet-bucket")
        self.create("to-parquet", bucket, BufferingHints={"SizeInMBs": 64, "IntervalInSeconds": 1},
                    ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                    DataFormatConversionConfiguration={
                        "Enabled": True,
                        "SchemaConfiguration": {"RoleARN": ROLE, "DatabaseName": "lake", "TableName": "events",
                                                "Region": "us-east-1", "VersionId": "LATEST"},
                        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
                        "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}}})
        records = [b'{"User":"ana","n":1,"amount":"12.50","at":"2026-12-01T10:00:00Z","ok":true}',
                   b'{"user":"bo","n":2,"amount":3.333,"at":1796154000}',
                   b'{"user":"cy","n":"many"}']
        self.firehose.put_record_batch(DeliveryStreamName="to-parquet", Records=[{"Data": r} for r in records])
        keys = wait_for(lambda: len(self.objects(bucket)) >= 2 and self.objects(bucket), timeout=30)
        [parquet_key] = [k for k in keys if not k.startswith("errors/")]
        [error_key] = [k for k in keys if k.startswith("errors/")]
        self.assertTrue(parquet_key.endswith(".parquet"), parquet_key)
        table = pq.read_table(io.BytesIO(self.read(bucket, parquet_key)[0]))
        self.assertEqual(table.column_names, ["user", "n", "amount", "at", "ok"])
        rows = table.to_pylist()
        self.assertEqual([(r["user"], r["n"], str(r["amount"]), r["ok"]) for r in rows],
                         [("ana", 1, "12.50", True), ("bo", 2, "3.33", None)])
        self.assertEqual(rows[0]["at"].isoformat(), "2026-12-01T10:00:00+00:00")
        self.assertEqual(rows[1]["at"].timestamp(), 1796154000)
        self.assertRegex(error_key, r"^errors/format-conversion-failed/to-parquet" + SUFFIX + "$")
        failed = json.loads(self.read(bucket, error_key)[0])
        self.assertEqual(list(failed)[:6], ["attemptsMade", "arrivalTimestamp", "lastErrorCode", "lastErrorMessage",
                                            "attemptEndingTimestamp", "rawData"])
        self.assertEqual(base64.b64decode(failed["rawData"]), records[2])
        self.assertEqual(failed["dataCatalogTable"]["tableName"], "events")
        self.assertIn("column n", failed["lastErrorMessage"])

    def test_conversion_rules(self):
        conversion = {"Enabled": True, "SchemaConfiguration": {"RoleARN": ROLE, "DatabaseName": "d", "TableName": "t"},
                      "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}}}
        cases = [
            (dict(BufferingHints={"SizeInMBs": 5, "IntervalInSeconds": 60}),
             "BufferingHints.SizeInMBs must be at least 64 when data format conversion is enabled."),
            (dict(CompressionFormat="GZIP"), "CompressionFormat must be UNCOMPRESSED when data format conversion"),
            (dict(DataFormatConversionConfiguration=dict(
                conversion, OutputFormatConfiguration={"Serializer": {"OrcSerDe": {}}})),
             "ORC output (OrcSerDe) is not supported by this server; use ParquetSerDe"),
        ]
        for extra, message in cases:
            with self.subTest(message=message):
                extra.setdefault("DataFormatConversionConfiguration", conversion)
                code, got = self.error(self.firehose.create_delivery_stream, DeliveryStreamName="conversion-rules",
                                       ExtendedS3DestinationConfiguration=s3_destination("b-1", **extra))
                self.assertEqual(code, "InvalidArgumentException")
                self.assertTrue(got.startswith(message), got)


class Durability(unittest.TestCase):
    """Restarts and kill -9 on a server of its own."""

    def test_buffered_records_survive_a_restart(self):
        data_dir = tempfile.mkdtemp(prefix="millrace-firehose-restart-")
        server = firehose_server(data_dir)
        s3 = MOTO.s3()
        s3.create_bucket(Bucket="restart-bucket")
        firehose = server.client(service="firehose")
        firehose.create_delivery_stream(
            DeliveryStreamName="restart", ExtendedS3DestinationConfiguration=s3_destination(
                "restart-bucket", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 4}))
        firehose.put_record(DeliveryStreamName="restart", Record={"Data": b"buffered"})
        server.stop()
        self.assertNotIn("Contents", s3.list_objects_v2(Bucket="restart-bucket"))
        server = firehose_server(data_dir)
        try:
            listing = wait_for(lambda: s3.list_objects_v2(Bucket="restart-bucket").get("Contents"), timeout=30)
            self.assertEqual(len(listing), 1)
            body = s3.get_object(Bucket="restart-bucket", Key=listing[0]["Key"])["Body"].read()
            self.assertEqual(body, b"buffered")
        finally:
            server.close()

    def test_kill_9_during_deliveries_loses_no_acknowledged_record(self):
        data_dir = tempfile.mkdtemp(prefix="millrace-firehose-crash-")
        server = firehose_server(data_dir)
        s3 = MOTO.s3()
        s3.create_bucket(Bucket="crash-bucket")
        firehose = server.client(service="firehose")
        firehose.create_delivery_stream(
            DeliveryStreamName="crash", ExtendedS3DestinationConfiguration=s3_destination(
                "crash-bucket", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1},
                ProcessingConfiguration={"Enabled": True, "Processors": [
                    {"Type": "AppendDelimiterToRecord", "Parameters": []}]}))
        acknowledged = []
        stop = threading.Event()

        def produce():
            batch = 0
            client = server.client(service="firehose")
            while not stop.is_set():
                records = [b"%06d-%03d" % (batch, i) + b"." * 2000 for i in range(100)]
                try:
                    answer = client.put_record_batch(DeliveryStreamName="crash",
                                                     Records=[{"Data": record} for record in records])
                except Exception:  # the server died mid-request: not acknowledged
                    return
                for record, response in zip(records, answer["RequestResponses"]):
                    if "RecordId" in response:
                        acknowledged.append(record)
                batch += 1

        producer = threading.Thread(target=produce)
        producer.start()
        # Let several objects be delivered, then kill in the middle of the next ones.
        wait_for(lambda: len(s3.list_objects_v2(Bucket="crash-bucket").get("Contents", [])) >= 3, timeout=60)
        server.kill()
        stop.set()
        producer.join(timeout=30)
        self.assertGreater(len(acknowledged), 0)
        server = firehose_server(data_dir)
        try:
            def delivered():
                seen = []
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crash-bucket"):
                    for item in page.get("Contents", []):
                        body = s3.get_object(Bucket="crash-bucket", Key=item["Key"])["Body"].read()
                        seen.extend(body.split(b"\n")[:-1])
                return seen

            def complete():
                seen = delivered()
                return seen if set(acknowledged) <= set(seen) else None

            seen = wait_for(complete, timeout=60, step=1) or delivered()
            missing = set(acknowledged) - set(seen)
            self.assertEqual(len(missing), 0, f"{len(missing)} acknowledged records lost")
            duplicates = len(seen) - len(set(seen))
            print(f"\ncrash test: {len(acknowledged)} acknowledged, {len(seen)} delivered, "
                  f"{duplicates} duplicates (at most the records of the objects being stored may repeat)", file=sys.stderr)
        finally:
            server.close()


class LocalDefault(unittest.TestCase):
    """No --s3-endpoint: each bucket is a folder under the data directory."""

    def test_objects_land_in_the_data_directory(self):
        server = firehose_server(s3=False)
        try:
            firehose = server.client(service="firehose")
            firehose.create_delivery_stream(
                DeliveryStreamName="local", ExtendedS3DestinationConfiguration=s3_destination(
                    "local-bucket", CompressionFormat="GZIP",
                    BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1}))
            firehose.put_record_batch(DeliveryStreamName="local",
                                      Records=[{"Data": b"on "}, {"Data": b"a fresh box"}])
            root = os.path.join(server.data_dir, "s3", "local-bucket")

            def files():
                found = []
                for folder, _, names in os.walk(root):
                    found.extend(os.path.join(folder, name) for name in names if not name.startswith("."))
                return found

            [path] = wait_for(files, timeout=20)
            relative = os.path.relpath(path, root)
            self.assertRegex(relative, r"^\d{4}/\d{2}/\d{2}/\d{2}/local" + SUFFIX + r"\.gz$")
            with gzip.open(path) as file:
                self.assertEqual(file.read(), b"on a fresh box")
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
