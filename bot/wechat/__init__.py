"""WeChat's protocol only: the callback, the async API client with its shared token, the emulator.

Nothing in here knows what a notice or a lesson is.
"""
