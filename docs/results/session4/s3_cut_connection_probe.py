# Probe: which errors does a cut connection give pyarrow's S3 client, and are they classed transient?
import os, sys, threading, time, collections
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_REGION="us-east-1")
from pathlib import Path
from tests.services import MotoS3, TcpProxy
import boto3
import pyarrow.fs as pafs
from metagan.storage import is_transient
server = MotoS3(Path("/tmp/moto_probe.log"))
proxy = TcpProxy(server.port)
boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket="bkt")
fs = pafs.S3FileSystem(region="us-east-1", connect_timeout=3, request_timeout=20,
                       retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
                       background_writes=False, endpoint_override=f"127.0.0.1:{proxy.port}", scheme="http")
errors = collections.Counter()
stop = False
def work(k):
    data = os.urandom(3_000_000)
    i = 0
    while not stop:
        i += 1
        try:
            with fs.open_output_stream(f"bkt/t{k}/o{i}", compression=None) as f:
                f.write(data)
            fs.get_file_info(f"bkt/t{k}/o{i}")
            with fs.open_input_stream(f"bkt/t{k}/o{i}", compression=None) as f:
                f.read()
        except OSError as e:
            msg = str(e).replace(f"t{k}/o{i}", "KEY")[:160]
            errors[(is_transient(e), msg)] += 1
threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads: t.start()
for cycle in range(15):
    time.sleep(0.7); proxy.block(); time.sleep(0.5); proxy.unblock()
stop = True
for t in threads: t.join()
for (transient, msg), n in errors.most_common():
    print(n, transient, msg)
proxy.stop(); server.stop()
