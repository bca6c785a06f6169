"""dashboard-api: the operator's REST/WebSocket API and web page."""
