"""Routing: which channels a request goes to. Pure; never imports channels/."""
