"""Web plumbing: operations endpoints, and later the console and H5 pages (auth, sessions, CSRF)."""
