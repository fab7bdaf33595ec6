"""The conversation engine: router, filters, middlewares and per-user state in Redis."""
