"""State and outbox stores: Azure Table storage, SQLite, their row codec."""
