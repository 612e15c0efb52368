"""Offline Azure OpenAI–compatible emulator for development and tests (see server.py)."""
