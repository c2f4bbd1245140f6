"""deskbell: durable hand-off of chatbot assistance requests to humans."""

from __future__ import annotations

__version__ = "0.1.0"
