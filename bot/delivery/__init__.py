"""Delivery: the outbox (a Redis Stream), the workers that drain it, pacing and retries."""
