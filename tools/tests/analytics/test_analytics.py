"""Kinesis Data Analytics for SQL on a real `millrace serve`, driven by boto3's
`kinesisanalytics` and `kinesisanalyticsv2` clients: AWS's documented applications (a tumbling
count per ticker, a sliding average, a stagger window, a join with reference data) are created,
started and fed through a data stream; their output stream is read back and compared with the
answer this test computes itself from the input stream's own records (ROWTIME is a record's
arrival time, which GetRecords returns). Restarts (StopApplication and LAST_STOPPED_POINT, and
a kill -9 of the server) must give every window's row exactly once.

Run by `cargo test -p millrace-tools --test analytics_api`.
"""

import collections
import datetime
import json
import os
import sys
import threading
import time
import unittest

from botocore.exceptions import ClientError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "kinesis"))
from harness import REGION, Server  # noqa: E402

ACCOUNT = "000000000000"
ROLE = "arn:aws:iam::123456789012:role/kda"
TICKERS = ["AMZN", "AAPL", "MSFT", "QXZ", "ASD"]
# The workers' grace (500 ms) plus a tick and some slack: a window has closed by then.
CLOSE_SECS = 2.5

SERVER = None


def setUpModule():
    global SERVER
    SERVER = Server().start()


def tearDownModule():
    SERVER.close()


def stream_arn(name):
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def ts_text(ms):
    """KDA's TIMESTAMP text: yyyy-MM-dd HH:mm:ss.SSS, UTC."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def rust_float(value):
    """A double as the server prints it (the shortest digits; integral values without `.0`)."""
    return str(int(value)) if value == int(value) else repr(value)


def json_schema(columns):
    return {
        "RecordFormat": {"RecordFormatType": "JSON", "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
        "RecordEncoding": "UTF-8",
        "RecordColumns": [{"Name": name, "Mapping": f"$.{name}", "SqlType": kind} for name, kind in columns],
    }


TICKER_SCHEMA = json_schema([("TICKER_SYMBOL", "VARCHAR(4)"), ("SECTOR", "VARCHAR(16)"), ("CHANGE", "DOUBLE"), ("PRICE", "DOUBLE")])


class Fixture:
    """A server's clients, an input and an output stream."""

    def __init__(self, server, test, shards=2):
        self.server = server
        self.kinesis = server.client()
        self.kda = server.client(service="kinesisanalytics")
        self.kda2 = server.client(service="kinesisanalyticsv2")
        self.input = f"{test}-in"
        self.output = f"{test}-out"
        self.kinesis.create_stream(StreamName=self.input, ShardCount=shards)
        self.kinesis.create_stream(StreamName=self.output, ShardCount=shards)

    def reconnect(self, server):
        self.server = server
        self.kinesis = server.client()
        self.kda = server.client(service="kinesisanalytics")
        self.kda2 = server.client(service="kinesisanalyticsv2")

    def put(self, records):
        """Puts records (dicts) in order, one PutRecords per 100."""
        for start in range(0, len(records), 100):
            batch = records[start:start + 100]
            answer = self.kinesis.put_records(
                StreamName=self.input,
                Records=[{"Data": json.dumps(record).encode(), "PartitionKey": record.get("TICKER_SYMBOL", "k") + str(start + i)}
                         for i, record in enumerate(batch)],
            )
            assert answer["FailedRecordCount"] == 0, answer

    def read_all(self, stream):
        """Every record of a stream: (arrival ms, shard index, sequence, data)."""
        out = []
        for shard in self.kinesis.list_shards(StreamName=stream)["Shards"]:
            iterator = self.kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                answer = self.kinesis.get_records(ShardIterator=iterator, Limit=10000)
                for record in answer["Records"]:
                    arrival = round(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
                    out.append((arrival, int(shard["ShardId"].split("-")[1]), int(record["SequenceNumber"]), record["Data"]))
                if not answer["Records"] and answer.get("MillisBehindLatest", 0) == 0:
                    break
                iterator = answer.get("NextShardIterator")
        out.sort()
        return out

    def output_rows(self):
        return [json.loads(data) for _, _, _, data in self.read_all(self.output)]

    def inputs(self):
        return [(arrival, json.loads(data)) for arrival, _, _, data in self.read_all(self.input)]

    def wait_for(self, expected_count, timeout=30):
        deadline = time.time() + timeout
        rows = []
        while time.time() < deadline:
            rows = self.output_rows()
            if len(rows) >= expected_count:
                time.sleep(0.5)
                return self.output_rows()
            time.sleep(0.25)
        return rows

    def wait_status(self, name, status, client=None, timeout=30):
        client = client or self.kda
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = client.describe_application(ApplicationName=name)["ApplicationDetail"]["ApplicationStatus"]
            if found == status:
                return
            time.sleep(0.1)
        found = client.describe_application(ApplicationName=name)["ApplicationDetail"]["ApplicationStatus"]
        log = "".join(line for line in self.server.log if "analytics" in line)
        raise AssertionError(f"{name} is {found}, not {status}; the server's analytics log:\n{log}")

    def create(self, name, code, schema=TICKER_SCHEMA, references=None, start="TRIM_HORIZON"):
        self.kda.create_application(
            ApplicationName=name,
            ApplicationDescription="from AWS's examples",
            Inputs=[{
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {"ResourceARN": stream_arn(self.input), "RoleARN": ROLE},
                "InputParallelism": {"Count": 1},
                "InputSchema": schema,
            }],
            Outputs=[{
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {"ResourceARN": stream_arn(self.output), "RoleARN": ROLE},
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }],
            ApplicationCode=code,
        )
        detail = self.kda.describe_application(ApplicationName=name)["ApplicationDetail"]
        if references:
            self.kda.add_application_reference_data_source(
                ApplicationName=name, CurrentApplicationVersionId=detail["ApplicationVersionId"], ReferenceDataSource=references)
            detail = self.kda.describe_application(ApplicationName=name)["ApplicationDetail"]
        input_id = detail["InputDescriptions"][0]["InputId"]
        self.kda.start_application(
            ApplicationName=name,
            InputConfigurations=[{"Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": start}}],
        )
        self.wait_status(name, "RUNNING")
        return input_id


def ticks(count, seed=7):
    """Deterministic stock ticks."""
    out = []
    state = seed
    for index in range(count):
        state = (state * 1103515245 + 12345) % (1 << 31)
        ticker = TICKERS[state % len(TICKERS)]
        out.append({"TICKER_SYMBOL": ticker, "SECTOR": "TECHNOLOGY", "CHANGE": (state % 200 - 100) / 10, "PRICE": 10 + state % 900 / 4})
    return out


TUMBLING = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    WINDOW_START TIMESTAMP, TICKER_SYMBOL VARCHAR(4), TICKER_COUNT INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '1' SECOND), TICKER_SYMBOL, COUNT(*) AS TICKER_COUNT
    FROM "SOURCE_SQL_STREAM_001"
    GROUP BY TICKER_SYMBOL, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '1' SECOND);
"""


def tumbling_expected(inputs):
    counts = collections.Counter()
    for arrival, record in inputs:
        counts[(ts_text(arrival - arrival % 1000), record["TICKER_SYMBOL"])] += 1
    return counts


def tumbling_got(rows):
    return collections.Counter((row["WINDOW_START"], row["TICKER_SYMBOL"]) for row in rows), \
        {(row["WINDOW_START"], row["TICKER_SYMBOL"]): row["TICKER_COUNT"] for row in rows}


class DocumentedApplications(unittest.TestCase):
    def test_tumbling_count_per_ticker(self):
        fx = Fixture(SERVER, "tumbling")
        fx.create("tumbling", TUMBLING)
        for _ in range(3):
            fx.put(ticks(150))
            time.sleep(0.7)
        time.sleep(CLOSE_SECS)
        expected = tumbling_expected(fx.inputs())
        rows = fx.wait_for(len(expected))
        seen, got = tumbling_got(rows)
        self.assertEqual(max(seen.values()), 1, "a window's row came out twice")
        self.assertEqual(got, dict(expected))
        # The rows arrive in ROWTIME order: window starts never go back.
        starts = [row["WINDOW_START"] for row in rows]
        self.assertEqual(len(rows), len(expected))
        detail = fx.kda.describe_application(ApplicationName="tumbling")["ApplicationDetail"]
        self.assertEqual(detail["ApplicationStatus"], "RUNNING")
        self.assertEqual(detail["InputDescriptions"][0]["InAppStreamNames"], ["SOURCE_SQL_STREAM_001"])
        self.assertEqual(detail["InputDescriptions"][0]["InputStartingPositionConfiguration"]["InputStartingPosition"], "TRIM_HORIZON")
        self.assertTrue(starts)
        fx.kda.stop_application(ApplicationName="tumbling")
        fx.wait_status("tumbling", "READY")

    def test_sliding_average(self):
        fx = Fixture(SERVER, "sliding", shards=1)
        fx.create("sliding", """
            CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4), avg_price DOUBLE);
            CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
                SELECT STREAM ticker_symbol, AVG(price) OVER W1 AS avg_price
                FROM "SOURCE_SQL_STREAM_001"
                WINDOW W1 AS (PARTITION BY ticker_symbol RANGE INTERVAL '10' SECOND PRECEDING);
        """)
        fx.put(ticks(200, seed=3))
        inputs = fx.inputs()
        rows = fx.wait_for(len(inputs))
        self.assertEqual(len(rows), len(inputs))
        history = collections.defaultdict(list)
        for (arrival, record), row in zip(inputs, rows):
            history[record["TICKER_SYMBOL"]].append((arrival, record["PRICE"]))
            window = [price for at, price in history[record["TICKER_SYMBOL"]] if at >= arrival - 10000]
            self.assertEqual(row["TICKER_SYMBOL"], record["TICKER_SYMBOL"])
            self.assertAlmostEqual(row["AVG_PRICE"], sum(window) / len(window), places=9)

    def test_stagger_window(self):
        fx = Fixture(SERVER, "stagger", shards=1)
        schema = json_schema([("EVENT_TIME", "TIMESTAMP"), ("TICKER", "VARCHAR(4)")])
        fx.create("stagger", """
            CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
                event_time TIMESTAMP, ticker_symbol VARCHAR(4), ticker_count INTEGER);
            CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
                SELECT STREAM FLOOR(EVENT_TIME TO MINUTE), TICKER, COUNT(*) AS ticker_count
                FROM "SOURCE_SQL_STREAM_001"
                WINDOWED BY STAGGER (
                    PARTITION BY FLOOR(EVENT_TIME TO MINUTE), TICKER RANGE INTERVAL '1' SECOND);
        """, schema=schema)
        minute = "2026-12-08 10:15:00.000"
        for burst in range(3):
            fx.put([{"EVENT_TIME": f"2026-12-08 10:15:{10 + i % 3:02d}.000", "TICKER": TICKERS[i % 2]} for i in range(20)])
            time.sleep(0.4)
        time.sleep(CLOSE_SECS)
        inputs = fx.inputs()
        # Per partition: a window opens with its first row and takes rows for one second.
        expected = collections.Counter()
        opened = {}
        counts = collections.Counter()
        for arrival, record in inputs:
            key = record["TICKER"]
            if key in opened and arrival >= opened[key] + 1000:
                expected[(key, counts[key])] += 1
                del opened[key]
                counts[key] = 0
            if key not in opened:
                opened[key] = arrival
            counts[key] += 1
        for key in opened:
            expected[(key, counts[key])] += 1
        rows = fx.wait_for(sum(expected.values()))
        got = collections.Counter((row["TICKER_SYMBOL"], row["TICKER_COUNT"]) for row in rows)
        self.assertEqual(got, expected)
        self.assertTrue(all(row["EVENT_TIME"] == minute for row in rows))

    def test_join_with_reference_data_from_the_s3_store(self):
        fx = Fixture(SERVER, "join", shards=1)
        folder = os.path.join(SERVER.data_dir, "s3", "reference-bucket")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "TickerReference.csv"), "w") as file:
            file.write("AMZN,Amazon\nAAPL,Apple\nMSFT,Microsoft\n")
        references = {
            "TableName": "CompanyName",
            "S3ReferenceDataSource": {"BucketARN": "arn:aws:s3:::reference-bucket", "FileKey": "TickerReference.csv",
                                      "ReferenceRoleARN": ROLE},
            "ReferenceSchema": {
                "RecordFormat": {"RecordFormatType": "CSV", "MappingParameters": {
                    "CSVMappingParameters": {"RecordRowDelimiter": "\n", "RecordColumnDelimiter": ","}}},
                "RecordEncoding": "UTF-8",
                "RecordColumns": [{"Name": "Ticker", "SqlType": "VARCHAR(4)"}, {"Name": "Company", "SqlType": "VARCHAR(15)"}],
            },
        }
        fx.create("join", """
            CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
                ticker_symbol VARCHAR(4), "Company" VARCHAR(20), price DOUBLE);
            CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
                SELECT STREAM ticker_symbol, "c"."Company", price
                FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" AS "c"
                ON "SOURCE_SQL_STREAM_001".ticker_symbol = "c"."Ticker";
        """, references=references)
        records = ticks(60, seed=11)
        fx.put(records)
        rows = fx.wait_for(len(records))
        names = {"AMZN": "Amazon", "AAPL": "Apple", "MSFT": "Microsoft"}
        self.assertEqual(
            sorted((row["TICKER_SYMBOL"], row["Company"], row["PRICE"]) for row in rows),
            sorted((record["TICKER_SYMBOL"], names.get(record["TICKER_SYMBOL"]), record["PRICE"]) for record in records),
        )
        detail = fx.kda.describe_application(ApplicationName="join")["ApplicationDetail"]
        self.assertEqual(detail["ReferenceDataSourceDescriptions"][0]["TableName"], "CompanyName")


EVENT_SCHEMA = json_schema([("TICKER_SYMBOL", "VARCHAR(4)"), ("PRICE", "DOUBLE"), ("EVENT_TIME", "TIMESTAMP")])
EVENT_BASE_MS = 1767225600000  # 2026-01-01 00:00:00 UTC


def events(count, seed):
    """Events whose event times run ahead 137 ms apiece, out of order by up to 1 s."""
    out = []
    state = seed
    for index in range(count):
        state = (state * 1103515245 + 12345) % (1 << 31)
        at = EVENT_BASE_MS + index * 137 + state % 1000 - 500
        out.append((at, TICKERS[state % 3], (state % 400) / 4))
    return out


def event_records(items):
    return [{"TICKER_SYMBOL": ticker, "PRICE": price, "EVENT_TIME": ts_text(at)} for at, ticker, price in items]


FLINK_PREFIX = """
CREATE OR REPLACE STREAM BIDS (ticker VARCHAR(4), price DOUBLE, et TIMESTAMP,
    WATERMARK FOR et AS et - INTERVAL '2' SECOND);
CREATE OR REPLACE PUMP TO_BIDS AS INSERT INTO BIDS
    SELECT STREAM TICKER_SYMBOL, PRICE, EVENT_TIME FROM "SOURCE_SQL_STREAM_001";
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ws TIMESTAMP, we TIMESTAMP, ticker VARCHAR(4), n BIGINT, total DOUBLE);
"""


class FlinkStyle(unittest.TestCase):
    """The Flink-style dialect: window table functions on an event-time column with a watermark."""

    server = None

    def run_app(self, name, query, expected_of):
        fx = Fixture(self.server or SERVER, name, shards=1)
        fx.create(name, FLINK_PREFIX + query, schema=EVENT_SCHEMA)
        items = events(300, seed=len(name))
        fx.put(event_records(items))
        watermark = max(at for at, _, _ in items) - 2000
        expected = expected_of(items, watermark)
        rows = fx.wait_for(len(expected))
        got = sorted((row["WS"], row["WE"], row["TICKER"], row["N"], row["TOTAL"]) for row in rows)
        self.assertEqual(got, sorted(expected))

    def test_hop_on_event_time(self):
        def expected_of(items, watermark):
            windows = collections.defaultdict(lambda: [0, 0.0])
            for at, ticker, price in items:
                start = at - at % 2000
                while start + 4000 > at:
                    if start + 4000 <= watermark:
                        windows[(start, ticker)][0] += 1
                        windows[(start, ticker)][1] += price
                    start -= 2000
            return [(ts_text(s), ts_text(s + 4000), t, n, total) for (s, t), (n, total) in windows.items()]

        self.run_app("flinkhop", """
            INSERT INTO "DESTINATION_SQL_STREAM"
            SELECT window_start, window_end, ticker, COUNT(*), SUM(price)
            FROM TABLE(HOP(TABLE BIDS, DESCRIPTOR(et), INTERVAL '2' SECOND, INTERVAL '4' SECOND))
            GROUP BY ticker, window_start, window_end;""", expected_of)

    def test_tumble_on_event_time(self):
        def expected_of(items, watermark):
            windows = collections.defaultdict(lambda: [0, 0.0])
            for at, ticker, price in items:
                start = at - at % 3000
                if start + 3000 <= watermark:
                    windows[(start, ticker)][0] += 1
                    windows[(start, ticker)][1] += price
            return [(ts_text(s), ts_text(s + 3000), t, n, total) for (s, t), (n, total) in windows.items()]

        self.run_app("flinktumble", """
            INSERT INTO "DESTINATION_SQL_STREAM"
            SELECT window_start, window_end, ticker, COUNT(*), SUM(price)
            FROM TABLE(TUMBLE(TABLE BIDS, DESCRIPTOR(et), INTERVAL '3' SECOND))
            GROUP BY ticker, window_start, window_end;""", expected_of)

    def test_session_on_event_time(self):
        def expected_of(items, watermark):
            out = []
            for ticker in TICKERS[:3]:
                times = sorted((at, price) for at, t, price in items if t == ticker)
                session = None
                for at, price in times:
                    if session and at < session[1] + 1000:
                        session = [session[0], at, session[2] + 1, session[3] + price]
                    else:
                        if session:
                            out.append((session[0], session[1] + 1000, ticker, session[2], session[3]))
                        session = [at, at, 1, price]
                if session:
                    out.append((session[0], session[1] + 1000, ticker, session[2], session[3]))
            return [(ts_text(s), ts_text(e), t, n, total) for s, e, t, n, total in out if e <= watermark]

        self.run_app("flinksession", """
            INSERT INTO "DESTINATION_SQL_STREAM"
            SELECT window_start, window_end, ticker, COUNT(*), SUM(price)
            FROM TABLE(SESSION(TABLE BIDS PARTITION BY ticker, DESCRIPTOR(et), INTERVAL '1' SECOND))
            GROUP BY ticker, window_start, window_end;""", expected_of)


class OnTheGpu(FlinkStyle):
    """The same event-time applications on a server run with --analytics-device gpu: the
    windows aggregate with the wgpu kernels (lavapipe in CI) and give the same answers."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server(extra_args=["--analytics-device", "gpu"])
        try:
            cls.server.start()
        except RuntimeError as error:
            text = str(error)
            required = os.environ.get("MILLRACE_GPU_REQUIRED")
            if "no GPU support" in text or ("no GPU adapter" in text and not required):
                raise unittest.SkipTest("this build or machine has no GPU path: " + text.splitlines()[-1])
            raise

    @classmethod
    def tearDownClass(cls):
        log = "".join(cls.server.log)
        cls.server.close()
        # The server took the adapter, and the HOP and TUMBLE pumps ran on it (sessions stay
        # on the CPU: the kernels aggregate panes).
        assert "aggregates event-time windows on the GPU" in log, log
        assert log.count("pump(s) aggregate on the GPU") >= 2, log


class DeliveryStreams(unittest.TestCase):
    def test_from_a_delivery_stream_to_a_delivery_stream_and_into_the_s3_store(self):
        """KinesisFirehoseInput and KinesisFirehoseOutput: records put with PutRecordBatch are
        read by the application from the delivery stream's buffer, and its rows delivered by a
        second delivery stream into the local S3 folder."""
        firehose = SERVER.client(service="firehose")
        kda = SERVER.client(service="kinesisanalytics")
        bucket = "kda-out-bucket"

        def create(name):
            firehose.create_delivery_stream(
                DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                ExtendedS3DestinationConfiguration={
                    "RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}", "Prefix": f"{name}/",
                    "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}})
            return f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{name}"

        source, sink = create("kda-fh-in"), create("kda-fh-out")
        kda.create_application(
            ApplicationName="firehose-app",
            Inputs=[{"NamePrefix": "SOURCE_SQL_STREAM",
                     "KinesisFirehoseInput": {"ResourceARN": source, "RoleARN": ROLE},
                     "InputSchema": TICKER_SCHEMA}],
            Outputs=[{"Name": "DESTINATION_SQL_STREAM",
                      "KinesisFirehoseOutput": {"ResourceARN": sink, "RoleARN": ROLE},
                      "DestinationSchema": {"RecordFormatType": "CSV"}}],
            ApplicationCode="""CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker VARCHAR(4), price DOUBLE);
                CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
                SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE PRICE > 50;""")
        detail = kda.describe_application(ApplicationName="firehose-app")["ApplicationDetail"]
        self.assertEqual(detail["InputDescriptions"][0]["KinesisFirehoseInputDescription"]["ResourceARN"], source)
        self.assertEqual(detail["OutputDescriptions"][0]["KinesisFirehoseOutputDescription"]["ResourceARN"], sink)
        kda.start_application(ApplicationName="firehose-app", InputConfigurations=[{
            "Id": detail["InputDescriptions"][0]["InputId"],
            "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"}}])
        records = ticks(120, seed=41)
        answer = firehose.put_record_batch(
            DeliveryStreamName="kda-fh-in", Records=[{"Data": json.dumps(r).encode()} for r in records])
        self.assertEqual(answer["FailedPutCount"], 0)
        wanted = sorted(f"{r['TICKER_SYMBOL']},{rust_float(r['PRICE'])}\n" for r in records if r["PRICE"] > 50)
        folder = os.path.join(SERVER.data_dir, "s3", bucket, "kda-fh-out")
        deadline = time.time() + 30
        lines = []
        while time.time() < deadline:
            lines = []
            for root, _, files in os.walk(folder):
                for name in files:
                    if not name.startswith("."):
                        with open(os.path.join(root, name)) as file:
                            lines.extend(line + "\n" for line in file.read().splitlines())
            if len(lines) >= len(wanted):
                break
            time.sleep(0.25)
        self.assertEqual(sorted(lines), wanted)
        kda.stop_application(ApplicationName="firehose-app")


class Restarts(unittest.TestCase):
    def test_stop_and_start_at_the_last_stopped_point(self):
        fx = Fixture(SERVER, "laststop")
        fx.create("laststop", TUMBLING)
        fx.put(ticks(100, seed=5))
        time.sleep(0.6)
        fx.put(ticks(100, seed=6))
        fx.kda.stop_application(ApplicationName="laststop")
        fx.wait_status("laststop", "READY")
        # While it is stopped, records keep coming.
        fx.put(ticks(100, seed=8))
        time.sleep(0.6)
        fx.put(ticks(100, seed=9))
        detail = fx.kda.describe_application(ApplicationName="laststop")["ApplicationDetail"]
        fx.kda.start_application(
            ApplicationName="laststop",
            InputConfigurations=[{"Id": detail["InputDescriptions"][0]["InputId"],
                                  "InputStartingPositionConfiguration": {"InputStartingPosition": "LAST_STOPPED_POINT"}}],
        )
        fx.wait_status("laststop", "RUNNING")
        time.sleep(CLOSE_SECS)
        expected = tumbling_expected(fx.inputs())
        rows = fx.wait_for(sum(1 for _ in expected))
        seen, got = tumbling_got(rows)
        self.assertEqual(max(seen.values()), 1, "a window's row came out twice")
        self.assertEqual(got, dict(expected))

    def test_kill_9_in_the_middle_gives_every_window_once(self):
        server = Server().start()
        try:
            fx = Fixture(server, "killed")
            fx.create("killed", TUMBLING)
            stop = threading.Event()
            errors = []

            def produce():
                seed = 100
                while not stop.is_set():
                    seed += 1
                    try:
                        fx.put(ticks(40, seed=seed))
                    except Exception as error:  # the server is down for a moment
                        errors.append(error)
                        time.sleep(0.2)
                    time.sleep(0.05)

            producer = threading.Thread(target=produce)
            producer.start()
            time.sleep(3.5)
            server.kill()
            server.start()
            fx.reconnect(server)
            time.sleep(3.0)
            stop.set()
            producer.join()
            fx.wait_status("killed", "RUNNING")
            time.sleep(CLOSE_SECS + 1)
            expected = tumbling_expected(fx.inputs())
            self.assertGreater(len(expected), 10)
            rows = fx.wait_for(len(expected), timeout=60)
            seen, got = tumbling_got(rows)
            duplicates = [key for key, count in seen.items() if count > 1]
            self.assertEqual(duplicates, [], "windows written twice across the kill -9")
            missing = [key for key in expected if key not in got]
            self.assertEqual(missing, [], "windows lost across the kill -9")
            self.assertEqual(got, dict(expected))
        finally:
            server.close()


class ApiVersions(unittest.TestCase):
    def test_v2_sql_application_lifecycle(self):
        fx = Fixture(SERVER, "v2app")
        detail = fx.kda2.create_application(
            ApplicationName="v2app",
            RuntimeEnvironment="SQL-1_0",
            ServiceExecutionRole=ROLE,
            ApplicationConfiguration={
                "SqlApplicationConfiguration": {
                    "Inputs": [{"NamePrefix": "SOURCE_SQL_STREAM",
                                "KinesisStreamsInput": {"ResourceARN": stream_arn(fx.input)},
                                "InputSchema": TICKER_SCHEMA}],
                    "Outputs": [{"Name": "DESTINATION_SQL_STREAM",
                                 "KinesisStreamsOutput": {"ResourceARN": stream_arn(fx.output)},
                                 "DestinationSchema": {"RecordFormatType": "CSV"}}],
                },
                "ApplicationCodeConfiguration": {
                    "CodeContentType": "PLAINTEXT",
                    "CodeContent": {"TextContent": """
                        CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), PRICE DOUBLE);
                        CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
                            SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE PRICE > 100;"""},
                },
            },
            Tags=[{"Key": "team", "Value": "edge"}],
        )["ApplicationDetail"]
        self.assertEqual(detail["ApplicationStatus"], "READY")
        self.assertEqual(detail["RuntimeEnvironment"], "SQL-1_0")
        self.assertEqual(detail["ApplicationVersionId"], 1)
        sql = detail["ApplicationConfigurationDescription"]["SqlApplicationConfigurationDescription"]
        input_id = sql["InputDescriptions"][0]["InputId"]
        fx.kda2.start_application(ApplicationName="v2app", RunConfiguration={
            "SqlRunConfigurations": [{"InputId": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": "NOW"}}]})
        fx.wait_status("v2app", "RUNNING", client=fx.kda2)
        records = ticks(80, seed=21)
        fx.put(records)
        wanted = [r for r in records if r["PRICE"] > 100]
        deadline = time.time() + 20
        lines = []
        while time.time() < deadline and len(lines) < len(wanted):
            lines = [data.decode() for _, _, _, data in fx.read_all(fx.output)]
            time.sleep(0.2)
        self.assertEqual(sorted(lines), sorted(f"{r['TICKER_SYMBOL']},{rust_float(r['PRICE'])}\n" for r in wanted))
        summaries = fx.kda2.list_applications()["ApplicationSummaries"]
        self.assertIn("v2app", [s["ApplicationName"] for s in summaries])
        # The v1 API sees the same application.
        v1 = fx.kda.describe_application(ApplicationName="v2app")["ApplicationDetail"]
        self.assertEqual(v1["ApplicationStatus"], "RUNNING")
        arn = detail["ApplicationARN"]
        self.assertEqual(fx.kda2.list_tags_for_resource(ResourceARN=arn)["Tags"], [{"Key": "team", "Value": "edge"}])
        fx.kda2.stop_application(ApplicationName="v2app")
        fx.wait_status("v2app", "READY", client=fx.kda2)
        detail = fx.kda2.describe_application(ApplicationName="v2app")["ApplicationDetail"]
        fx.kda2.delete_application(ApplicationName="v2app", CreateTimestamp=detail["CreateTimestamp"])
        with self.assertRaises(ClientError) as caught:
            fx.kda2.describe_application(ApplicationName="v2app")
        self.assertEqual(caught.exception.response["Error"]["Code"], "ResourceNotFoundException")

    def test_updates_versions_and_outputs(self):
        fx = Fixture(SERVER, "updates")
        fx.kda.create_application(ApplicationName="updates", Inputs=[{
            "NamePrefix": "SOURCE_SQL_STREAM",
            "KinesisStreamsInput": {"ResourceARN": stream_arn(fx.input), "RoleARN": ROLE},
            "InputSchema": TICKER_SCHEMA}])
        detail = fx.kda.describe_application(ApplicationName="updates")["ApplicationDetail"]
        self.assertEqual(detail["ApplicationVersionId"], 1)
        fx.kda.add_application_output(ApplicationName="updates", CurrentApplicationVersionId=1, Output={
            "Name": "DESTINATION_SQL_STREAM",
            "KinesisStreamsOutput": {"ResourceARN": stream_arn(fx.output), "RoleARN": ROLE},
            "DestinationSchema": {"RecordFormatType": "JSON"}})
        with self.assertRaises(ClientError) as caught:
            fx.kda.update_application(ApplicationName="updates", CurrentApplicationVersionId=1,
                                      ApplicationUpdate={"ApplicationCodeUpdate": "x"})
        self.assertEqual(caught.exception.response["Error"]["Code"], "ConcurrentModificationException")
        fx.kda.update_application(ApplicationName="updates", CurrentApplicationVersionId=2, ApplicationUpdate={
            "ApplicationCodeUpdate": """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (T VARCHAR(4));
                CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
                SELECT STREAM TICKER_SYMBOL FROM "SOURCE_SQL_STREAM_001";"""})
        detail = fx.kda.describe_application(ApplicationName="updates")["ApplicationDetail"]
        self.assertEqual(detail["ApplicationVersionId"], 3)
        self.assertIn("PUMP", detail["ApplicationCode"])
        output_id = detail["OutputDescriptions"][0]["OutputId"]
        fx.kda.delete_application_output(ApplicationName="updates", CurrentApplicationVersionId=3, OutputId=output_id)
        detail = fx.kda.describe_application(ApplicationName="updates")["ApplicationDetail"]
        self.assertEqual(detail["OutputDescriptions"], [])
        names = [s["ApplicationName"] for s in fx.kda.list_applications(Limit=50)["ApplicationSummaries"]]
        self.assertIn("updates", names)
        fx.kda.delete_application(ApplicationName="updates", CreateTimestamp=detail["CreateTimestamp"])


class CommandLine(unittest.TestCase):
    def test_millrace_analytics_create_start_describe_stop_delete(self):
        import subprocess
        import tempfile
        from harness import ACCESS_KEY, SECRET_KEY
        fx = Fixture(SERVER, "cliapp", shards=1)
        records = ticks(50, seed=31)
        fx.put(records)
        env = dict(os.environ, MILLRACE_ENDPOINT=SERVER.endpoint, MILLRACE_ACCESS_KEY_ID=ACCESS_KEY,
                   MILLRACE_SECRET_ACCESS_KEY=SECRET_KEY)

        def cli(*args):
            done = subprocess.run([os.environ["MILLRACE_BIN"], "analytics", *args], env=env,
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual(done.returncode, 0, done.stderr)
            return done.stdout

        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as code:
            code.write("""CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker VARCHAR(4), price DOUBLE);
                CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
                SELECT STREAM TICKER_SYMBOL, PRICE FROM "SOURCE_SQL_STREAM_001";""")
        # No --schema: the CLI discovers it from the input's records.
        self.assertIn("application/cliapp", cli("create", "cliapp", "--sql", code.name, "--input", fx.input,
                                                  "--output", fx.output))
        cli("start", "cliapp", "--from", "TRIM_HORIZON")
        fx.wait_status("cliapp", "RUNNING")
        rows = fx.wait_for(len(records))
        self.assertEqual(sorted((r["TICKER"], r["PRICE"]) for r in rows),
                         sorted((r["TICKER_SYMBOL"], r["PRICE"]) for r in records))
        detail = json.loads(cli("describe", "cliapp"))
        self.assertEqual(detail["ApplicationStatus"], "RUNNING")
        self.assertIn("cliapp\tRUNNING", cli("list"))
        cli("stop", "cliapp")
        fx.wait_status("cliapp", "READY")
        cli("delete", "cliapp")
        self.assertNotIn("cliapp", cli("list"))
        os.unlink(code.name)


class Errors(unittest.TestCase):
    def code(self, call, **args):
        with self.assertRaises(ClientError) as caught:
            call(**args)
        return caught.exception.response["Error"]

    def test_bad_sql_names_its_line_and_column(self):
        kda = SERVER.client(service="kinesisanalytics")
        SERVER.client().create_stream(StreamName="badsql-in", ShardCount=1)
        error = self.code(kda.create_application, ApplicationName="badsql", Inputs=[{
            "NamePrefix": "SOURCE_SQL_STREAM",
            "KinesisStreamsInput": {"ResourceARN": stream_arn("badsql-in"), "RoleARN": ROLE},
            "InputSchema": TICKER_SCHEMA}],
            ApplicationCode='CREATE STREAM "D" (A INTEGER);\nCREATE PUMP "P" AS INSERT INTO "D"\nSELECT STREAM TICKR FROM "SOURCE_SQL_STREAM_001";')
        self.assertEqual(error["Code"], "CodeValidationException")
        self.assertIn("line 3, column 15", error["Message"])
        self.assertIn("TICKR", error["Message"])

    def test_clear_errors(self):
        kda = SERVER.client(service="kinesisanalytics")
        self.assertEqual(self.code(kda.describe_application, ApplicationName="nope")["Code"], "ResourceNotFoundException")
        kda.create_application(ApplicationName="empty")
        error = self.code(kda.start_application, ApplicationName="empty", InputConfigurations=[])
        self.assertEqual(error["Code"], "InvalidApplicationConfigurationException")
        self.assertEqual(self.code(kda.create_application, ApplicationName="empty")["Code"], "ResourceInUseException")
        self.assertEqual(self.code(kda.create_application, ApplicationName="bad name!")["Code"], "ValidationException")
        error = self.code(kda.add_application_input, ApplicationName="empty", CurrentApplicationVersionId=1, Input={
            "NamePrefix": "S", "KinesisStreamsInput": {"ResourceARN": "arn:aws:s3:::bucket", "RoleARN": ROLE},
            "InputSchema": TICKER_SCHEMA})
        self.assertEqual(error["Code"], "InvalidArgumentException")
        error = self.code(kda.add_application_input, ApplicationName="empty", CurrentApplicationVersionId=1, Input={
            "NamePrefix": "S", "KinesisStreamsInput": {"ResourceARN": stream_arn("x"), "RoleARN": ROLE},
            "InputSchema": json_schema([("A", "VARCHAR(0)")])})
        self.assertEqual(error["Code"], "InvalidArgumentException")
        self.assertIn("VARCHAR", error["Message"])
        kda2 = SERVER.client(service="kinesisanalyticsv2")
        error = self.code(kda2.create_application, ApplicationName="flink", RuntimeEnvironment="FLINK-1_20",
                          ServiceExecutionRole=ROLE)
        self.assertEqual(error["Code"], "UnsupportedOperationException")


class Discovery(unittest.TestCase):
    def test_discover_input_schema_from_a_stream(self):
        fx = Fixture(SERVER, "discover", shards=1)
        fx.put(ticks(10, seed=2))
        answer = fx.kda.discover_input_schema(
            ResourceARN=stream_arn(fx.input), RoleARN=ROLE,
            InputStartingPositionConfiguration={"InputStartingPosition": "TRIM_HORIZON"})
        columns = [(c["Name"], c["SqlType"], c["Mapping"]) for c in answer["InputSchema"]["RecordColumns"]]
        self.assertEqual(columns[0], ("TICKER_SYMBOL", "VARCHAR(4)", "$.TICKER_SYMBOL"))
        self.assertEqual(columns[2][1], "DOUBLE")
        self.assertEqual(len(answer["ParsedInputRecords"]), 10)
        self.assertEqual(len(answer["RawInputRecords"]), 10)
        # What it found is a schema the application accepts.
        fx.kda.create_application(ApplicationName="discovered", Inputs=[{
            "NamePrefix": "SOURCE_SQL_STREAM",
            "KinesisStreamsInput": {"ResourceARN": stream_arn(fx.input), "RoleARN": ROLE},
            "InputSchema": answer["InputSchema"]}])


if __name__ == "__main__":
    unittest.main()
