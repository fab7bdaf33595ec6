"""SafeBell (平安铃): home-school safety messaging for WeChat official accounts."""

__version__ = "0.1.0"
