"""The queue's side of Redis: the BullMQ job queue and the embedded Valkey that stands in for Redis."""
