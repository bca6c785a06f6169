"""Messages to a person: Alertmanager alerts, the ESS trip and the daily profit summary,
delivered to Telegram (Bot API ``sendMessage``) or a generic chat webhook."""
