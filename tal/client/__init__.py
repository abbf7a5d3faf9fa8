"""The Python client of the TAL initialization service (:mod:`tal.client.client`)."""

from tal.client.client import AsyncTALClient, RetryPolicy, TALClient, TALError

__all__ = ["AsyncTALClient", "RetryPolicy", "TALClient", "TALError"]
