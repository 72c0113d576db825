"""Destination senders (Teams, webhook, Azure DevOps, GitHub...) and their HTTP client."""
