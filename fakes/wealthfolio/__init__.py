"""A strict fake of the Wealthfolio v3 web server (see fake.py), and Wealthfolio's own
cash and holdings rules (rules.py). `python -m fakes.wealthfolio` runs it as a process."""

from fakes.wealthfolio.fake import FakeWealthfolio
from fakes.wealthfolio.faults import Fault
from fakes.wealthfolio.replies import API_PREFIX, Reply, error_reply, json_reply, text_reply
from fakes.wealthfolio.transport import IncomingRequest, RecordedRequest

__all__ = [
           "API_PREFIX",
           "FakeWealthfolio",
           "Fault",
           "IncomingRequest",
           "RecordedRequest",
           "Reply",
           "error_reply",
           "json_reply",
           "text_reply",
]
