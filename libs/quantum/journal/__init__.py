"""The SQL trade journal: models, migrations, the idempotent writer and read queries.

The journal service (``services/journal``) writes it from the streams; the dashboard API
reads it. See :mod:`quantum.journal.writer` for the delivery guarantees.
"""
