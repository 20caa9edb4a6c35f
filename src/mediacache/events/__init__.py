"""Telling applications about final outcomes: the outbox, webhook delivery, waiting and the event stream."""
