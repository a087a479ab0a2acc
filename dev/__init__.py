"""Developer tooling: the local Kafka broker, the worker process runner and the demo."""
