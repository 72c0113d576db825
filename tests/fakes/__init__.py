"""Real HTTP servers on loopback standing in for Teams, a webhook receiver, Azure DevOps and GitHub:
they keep what they were sent, check auth headers, and can be scripted to fail."""

from tests.fakes.azure_devops import FakeAzureDevOps
from tests.fakes.github import FakeGitHub
from tests.fakes.server import Answer, FakeServer, Received, Reply, Script, reply, running

__all__ = [
    "Answer",
    "FakeAzureDevOps",
    "FakeGitHub",
    "FakeServer",
    "Received",
    "Reply",
    "Script",
    "reply",
    "running",
]
