"""The web dashboard: server-rendered page shells (Jinja2) + small vanilla JS calling the JSON API."""
