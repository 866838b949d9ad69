"""`lorafleet demo`: SmolLM2 on an order-extraction task, end to end."""
