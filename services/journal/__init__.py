"""journal: writes the trade journal (SQL) from the streams."""
