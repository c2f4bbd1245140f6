"""Security: API keys, signed webhooks, limits, injection, fuzzing."""
