"""The Python client moved to its own package, `fillframe-client` (import `fillframe_client`), so a
backend that only calls Fillframe installs httpx and nothing of the server. This module keeps
`from fillframe.client import ...` working, for the public names and the helpers it used to hold."""

from fillframe_client import *  # noqa: F403
from fillframe_client import __all__ as _public
from fillframe_client.errors import error_from_reply
from fillframe_client.flows import ProgressCallback
from fillframe_client.inputs import EditSpec, check_params, edit_body, file_part, infer_mode
from fillframe_client.retry import can_retry, parse_retry_after, retry_delay
from fillframe_client.steps import Flow, Reply, Send, Sleep, TransportFailure

__all__ = [
    *_public,
    "EditSpec",
    "Flow",
    "ProgressCallback",
    "Reply",
    "Send",
    "Sleep",
    "TransportFailure",
    "can_retry",
    "check_params",
    "edit_body",
    "error_from_reply",
    "file_part",
    "infer_mode",
    "parse_retry_after",
    "retry_delay",
]
