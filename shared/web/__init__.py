"""The usage dashboard: a server-rendered page with an inline SVG chart (no CDN, no script)."""
