"""moto's S3 server on loopback: a real HTTP S3 endpoint that our obstore code path talks to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.utils.servers import free_port


@dataclass
class S3:
    endpoint: str
    server: ThreadedMotoServer

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        name = f"fillframe-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        return [o["Key"] for o in self.client().list_objects_v2(Bucket=bucket).get("Contents", [])]

    def settings(self, bucket: str, prefix: str = "ff") -> dict[str, str]:
        """FILLFRAME_* settings that point a process at `bucket`."""
        return {
            "storage_url": f"s3://{bucket}/{prefix}",
            "s3_endpoint": self.endpoint,
            "s3_region": "us-east-1",
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
        }


def start_s3() -> S3:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return S3(f"http://127.0.0.1:{port}", server)
