"""Redis: the connection, the embedded server, every key name and the Lua scripts."""
