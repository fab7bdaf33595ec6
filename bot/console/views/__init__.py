"""The console's pages, one module each: dashboard, notices, roster, audit log (and later capabilities')."""
